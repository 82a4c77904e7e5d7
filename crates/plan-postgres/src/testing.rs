//! A throwaway PostgreSQL cluster for tests (feature `test-support`): `initdb` in a
//! temporary directory, `pg_ctl start` on a free port on 127.0.0.1 with trust
//! authentication, stopped when dropped (or, for [`TempCluster::shared`], when the test
//! process exits).
//!
//! The server binaries are looked for in `$PLAN_POSTGRES_BIN`, then the highest
//! `/usr/lib/postgresql/<version>/bin` (Debian's `postgresql` package), then `PATH`.
//! PostgreSQL refuses to run as root: as root, the cluster runs as the `postgres` user
//! (through `runuser`).
//!
//! ```no_run
//! # async fn demo() {
//! use plan_postgres::{PostgresStore, testing::TempCluster};
//! let Some(cluster) = TempCluster::shared_or_skip() else { return };
//! let url = cluster.create_database();
//! let store = PostgresStore::connect(&url).await.unwrap();
//! # }
//! ```
#![allow(clippy::panic)]

use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The variable that lets tests skip when PostgreSQL is not installed.
pub const SKIP_VAR: &str = "PLAN_SKIP_POSTGRES";

/// Why a cluster could not start.
#[derive(Debug)]
pub struct ClusterError(String);

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClusterError {}

/// A PostgreSQL cluster of its own, on 127.0.0.1, with superuser `postgres` and trust
/// authentication; stopped and deleted on drop.
#[derive(Debug)]
pub struct TempCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<String>,
    reaper: Option<Child>,
    tls_cert: Option<PathBuf>,
    max_connections: u32,
    /// Whether `pg_stat_statements` is loaded ([`TempCluster::start_with_statement_stats`]).
    statement_stats: bool,
}

impl TempCluster {
    /// Starts a new cluster (about a second).
    ///
    /// # Errors
    /// [`ClusterError`] when the binaries are missing (it says to install the
    /// `postgresql` package) or the server does not start (with its log).
    pub fn start() -> Result<TempCluster, ClusterError> {
        Self::start_inner(false, 200)
    }

    /// Starts a new cluster that counts the statements it runs: `pg_stat_statements` is
    /// loaded (`shared_preload_libraries`), counting top-level statements only
    /// (`pg_stat_statements.track = top`). A database reads the counts once it has the
    /// extension ([`StatementStats::enable`]).
    ///
    /// # Errors
    /// As [`start`](Self::start), and when the server has no `pg_stat_statements`
    /// (Debian's `postgresql` package has it).
    pub fn start_with_statement_stats() -> Result<TempCluster, ClusterError> {
        let mut cluster = Self::prepare(false, 200)?;
        cluster.statement_stats = true;
        cluster.launch()?;
        Ok(cluster)
    }

    /// Starts a new cluster that accepts at most `n` connections (3 of them kept for
    /// superusers, as PostgreSQL does by default), for tests that run out of them.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with_max_connections(n: u32) -> Result<TempCluster, ClusterError> {
        Self::start_inner(false, n.max(5))
    }

    /// Starts a new cluster that also accepts TLS, with a certificate for `localhost` and
    /// `127.0.0.1` signed by a test CA ([`ca_cert`](Self::ca_cert)); needs `openssl`.
    ///
    /// # Errors
    /// As [`start`](Self::start), and when the certificate cannot be made.
    pub fn start_with_tls() -> Result<TempCluster, ClusterError> {
        Self::start_inner(true, 200)
    }

    fn start_inner(tls: bool, max_connections: u32) -> Result<TempCluster, ClusterError> {
        let mut cluster = Self::prepare(tls, max_connections)?;
        cluster.launch()?;
        Ok(cluster)
    }

    /// A cluster initialised in a temporary directory, not started yet.
    fn prepare(tls: bool, max_connections: u32) -> Result<TempCluster, ClusterError> {
        let bin = find_bin_dir()?;
        let run_as = if nix::unistd::geteuid().is_root() {
            Some("postgres".to_owned())
        } else {
            None
        };
        let dir = make_dirs(run_as.as_deref())?;
        let mut cluster = TempCluster {
            dir,
            bin,
            port: 0,
            run_as,
            reaper: None,
            tls_cert: None,
            max_connections,
            statement_stats: false,
        };
        if tls {
            cluster.tls_cert = Some(cluster.make_certificate()?);
        }
        cluster.initdb()?;
        Ok(cluster)
    }

    /// Starts the prepared cluster on a free port.
    fn launch(&mut self) -> Result<(), ClusterError> {
        let mut last = String::new();
        for _ in 0..5 {
            self.port = free_port()?;
            match self.pg_ctl_start() {
                Ok(()) => {
                    self.reaper = self.spawn_reaper();
                    return Ok(());
                }
                Err(e) => last = e.0,
            }
        }
        Err(ClusterError(last))
    }

    /// One cluster for the whole test process, started on first use and stopped when the
    /// process exits. Give each test a database of its own with
    /// [`create_database`](Self::create_database).
    ///
    /// # Panics
    /// When the cluster cannot start.
    pub fn shared() -> &'static TempCluster {
        static SHARED: OnceLock<Result<TempCluster, String>> = OnceLock::new();
        match SHARED.get_or_init(|| TempCluster::start().map_err(|e| e.to_string())) {
            Ok(cluster) => cluster,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`shared`](Self::shared), or `None` when `PLAN_SKIP_POSTGRES=1` is set (the test
    /// then returns early, saying so on stderr). Without that variable a missing
    /// PostgreSQL fails the test.
    ///
    /// # Panics
    /// When the cluster cannot start and skipping was not asked for.
    pub fn shared_or_skip() -> Option<&'static TempCluster> {
        if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
            eprintln!("{SKIP_VAR}=1: skipping a test that needs PostgreSQL");
            return None;
        }
        Some(Self::shared())
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` as user `postgres`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a database with a fresh random name (`t_...`) and returns its URL.
    ///
    /// # Panics
    /// When `createdb` fails.
    pub fn create_database(&self) -> String {
        let name = format!("t_{:016x}", rand::random::<u64>());
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg(&name)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run createdb: {e}"));
        assert!(
            out.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    /// Stops the server as an administrator would for a restart (`pg_ctl stop -m fast`:
    /// every client connection is ended, new ones are refused), keeping its data and
    /// port; [`start_again`](Self::start_again) brings it back.
    ///
    /// # Errors
    /// [`ClusterError`] when `pg_ctl` fails.
    pub fn stop(&self) -> Result<(), ClusterError> {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ClusterError(format!("cannot run pg_ctl: {e}")))?;
        if !out.status.success() {
            return Err(ClusterError(format!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// Starts the server stopped by [`stop`](Self::stop) again, on the same port with
    /// the same data, and waits until it accepts connections.
    ///
    /// # Errors
    /// [`ClusterError`] with the server's log when it does not start.
    pub fn start_again(&self) -> Result<(), ClusterError> {
        self.pg_ctl_start()
    }

    /// [`stop`](Self::stop), then [`start_again`](Self::start_again): a fast restart.
    ///
    /// # Errors
    /// As those.
    pub fn restart(&self) -> Result<(), ClusterError> {
        self.stop()?;
        self.start_again()
    }

    /// Ends every client connection to the cluster (`pg_terminate_backend`), as an
    /// administrator or a failover would; returns how many were ended.
    ///
    /// # Errors
    /// [`ClusterError`] when the cluster cannot be reached.
    pub fn terminate_backends(&self) -> Result<u64, ClusterError> {
        let url = self.url("postgres");
        block_on(async move {
            let client = admin(&url, "plan-test-admin").await?;
            // The holder of `stall_writes`'s lock last, once the others are gone (waiting
            // up to 5 s for each): a write waiting for that lock is ended while it waits,
            // never let through by the holder's end first.
            let mut ended = 0;
            for holder in [false, true] {
                let rows = client
                    .query(
                        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
                         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
                           AND (coalesce(application_name, '') = $1) = $2",
                        &[&HOLDER, &holder],
                    )
                    .await
                    .map_err(|e| ClusterError(format!("cannot terminate the backends: {e}")))?;
                ended += rows.len() as u64;
            }
            Ok(ended)
        })
    }

    /// Stalls the writes to run `run` in the database at `url`: locks the run's row (as
    /// a long transaction would) and returns once a writer waits for the lock, so that a
    /// fault struck then lands on a write in flight. The lock is given up when the guard
    /// is dropped, or when its connection is ended (a restart, `terminate_backends`).
    ///
    /// # Errors
    /// [`ClusterError`] when the database cannot be reached, or no writer came within
    /// 60 s.
    pub fn stall_writes(&self, url: &str, run: &str) -> Result<HeldConnections, ClusterError> {
        let (url, run) = (url.to_owned(), run.to_owned());
        let (held, rx) = std::sync::mpsc::channel::<Result<usize, ClusterError>>();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            block_on(async move {
                let locked = async {
                    let client = admin(&url, HOLDER).await?;
                    let err = |e: tokio_postgres::Error| {
                        ClusterError(format!("cannot stall the writes: {e}"))
                    };
                    client.batch_execute("BEGIN").await.map_err(err)?;
                    client
                        .query("SELECT 1 FROM plan.runs WHERE id = $1 FOR UPDATE", &[&run])
                        .await
                        .map_err(err)?;
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                    let watcher = admin(&url, "plan-test-admin").await?;
                    loop {
                        let waiting = watcher
                            .query(
                                "SELECT 1 FROM pg_stat_activity
                                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                                &[],
                            )
                            .await
                            .map_err(err)?;
                        if !waiting.is_empty() {
                            return Ok(client);
                        }
                        if std::time::Instant::now() > deadline {
                            return Err(ClusterError("no write came to wait for the lock".into()));
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                };
                match locked.await {
                    Ok(client) => {
                        let _ = held.send(Ok(1));
                        let _ = released.await;
                        drop(client);
                    }
                    Err(e) => {
                        let _ = held.send(Err(e));
                    }
                }
            });
        });
        let count = rx
            .recv()
            .map_err(|_| ClusterError("the lock holder stopped".into()))??;
        Ok(HeldConnections {
            count,
            release: Some(release),
            thread: Some(thread),
        })
    }

    /// Takes every connection slot of the cluster and holds them until the returned
    /// guard is dropped: other clients' connections are ended, and their new ones are
    /// refused (`too many connections`) meanwhile.
    ///
    /// # Errors
    /// [`ClusterError`] when the cluster cannot be reached.
    pub fn hold_every_connection(&self) -> Result<HeldConnections, ClusterError> {
        let url = self.url("postgres");
        let (held, rx) = std::sync::mpsc::channel::<Result<usize, ClusterError>>();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            block_on(async move {
                let mut clients = Vec::new();
                // Other clients reconnect as slots free up: take the slots, end the
                // other connections, and again, until every client connection is ours.
                for _ in 0..20 {
                    loop {
                        match admin(&url, HOLDER).await {
                            Ok(c) => clients.push(c),
                            Err(_) if !clients.is_empty() => break,
                            Err(e) => {
                                let _ = held.send(Err(e));
                                return;
                            }
                        }
                    }
                    let Some(last) = clients.last() else { break };
                    let ended = last
                        .query(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                             WHERE backend_type = 'client backend'
                               AND application_name <> $1",
                            &[&HOLDER],
                        )
                        .await
                        .map(|rows| rows.len())
                        .unwrap_or(0);
                    if ended == 0 {
                        break;
                    }
                }
                let _ = held.send(Ok(clients.len()));
                let _ = released.await;
                drop(clients);
            });
        });
        let count = rx
            .recv()
            .map_err(|_| ClusterError("the connection holder stopped".into()))??;
        Ok(HeldConnections {
            count,
            release: Some(release),
            thread: Some(thread),
        })
    }

    /// The test CA's certificate (PEM), for `sslrootcert`, when the cluster was started
    /// with TLS.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.tls_cert.as_deref()
    }

    /// A test CA and a server certificate it signed (for `localhost` and `127.0.0.1`)
    /// in `tls/`, the server key readable by the server only; returns the CA's path.
    fn make_certificate(&self) -> Result<PathBuf, ClusterError> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = self.dir.join("tls");
        let err = |e: &dyn fmt::Display| ClusterError(format!("cannot make a certificate: {e}"));
        std::fs::create_dir(&dir).map_err(|e| err(&e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| err(&e))?;
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .map_err(|e| err(&e))?;
        let openssl = |args: &[&str]| -> Result<(), ClusterError> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| err(&format!("cannot run openssl ({e}): install openssl")))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(err(&String::from_utf8_lossy(&out.stderr)))
            }
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-days", "2", "-subj", "/CN=plan test CA"],
                &["-keyout", "ca.key", "-out", "ca.crt"],
            ]
            .concat(),
        )?;
        openssl(
            &[
                &["req"][..],
                &ec,
                &["-subj", "/CN=localhost"],
                &["-keyout", "server.key", "-out", "server.csr"],
            ]
            .concat(),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ])?;
        let key = dir.join("server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err(&e))?;
        std::fs::set_permissions(
            dir.join("server.crt"),
            std::fs::Permissions::from_mode(0o644),
        )
        .map_err(|e| err(&e))?;
        if let Some(name) = &self.run_as
            && let Ok(Some(user)) = nix::unistd::User::from_name(name)
        {
            chown(&key, &user)?;
        }
        Ok(dir.join("ca.crt"))
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// A command for a server binary, as the cluster's user.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn initdb(&self) -> Result<(), ClusterError> {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ClusterError(format!("cannot run initdb: {e}")))?;
        if !out.status.success() {
            return Err(ClusterError(format!(
                "initdb failed in {}: {}",
                self.data().display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    fn pg_ctl_start(&self) -> Result<(), ClusterError> {
        let log = self.run_dir().join("server.log");
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections={}",
            self.port,
            self.run_dir().display(),
            self.max_connections
        );
        if self.statement_stats {
            options.push_str(
                " -c shared_preload_libraries=pg_stat_statements \
                 -c pg_stat_statements.track=top -c pg_stat_statements.max=10000",
            );
        }
        if self.tls_cert.is_some() {
            let tls = self.dir.join("tls");
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                tls.join("server.crt").display(),
                tls.join("server.key").display()
            ));
        }
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ClusterError(format!("cannot run pg_ctl: {e}")))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(ClusterError(format!(
                "pg_ctl start failed on port {}: {}\n{log}",
                self.port,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// A process that stops the cluster and deletes its directory once this process is
    /// gone, however it ends (a shared cluster is never dropped).
    fn spawn_reaper(&self) -> Option<Child> {
        const SCRIPT: &str = r#"
            while kill -0 "$1" 2>/dev/null; do sleep 0.2; done
            if [ -n "$5" ]; then runuser -u "$5" -- "$2" -D "$3" -m immediate -w stop
            else "$2" -D "$3" -m immediate -w stop; fi
            rm -rf "$4""#;
        Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("plan-postgres-reaper")
            .arg(std::process::id().to_string())
            .arg(self.bin.join("pg_ctl"))
            .arg(self.data())
            .arg(&self.dir)
            .arg(self.run_as.as_deref().unwrap_or(""))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The statements one database ran, counted by `pg_stat_statements` in a cluster started
/// with [`TempCluster::start_with_statement_stats`]: for benchmarks that count what a
/// run costs the database.
#[derive(Debug)]
pub struct StatementStats {
    url: String,
}

/// A statement (normalised: its constants are `$n`) and how often it ran.
#[derive(Clone, Debug, PartialEq)]
pub struct StatementCount {
    /// The statement's text.
    pub query: String,
    /// How many times it ran.
    pub calls: i64,
    /// How long it took on average, in milliseconds.
    pub mean_ms: f64,
}

impl StatementStats {
    /// Creates the extension in the database at `url` (a cluster's URL from
    /// [`TempCluster::create_database`]).
    ///
    /// # Errors
    /// [`ClusterError`] when the database cannot be reached or the cluster was not
    /// started with statement statistics.
    pub fn enable(url: &str) -> Result<StatementStats, ClusterError> {
        let url = url.to_owned();
        block_on(async {
            let client = admin(&url, "plan-test-stats").await?;
            client
                .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .await
                .map_err(|e| {
                    ClusterError(format!(
                        "cannot count statements (start the cluster with \
                         TempCluster::start_with_statement_stats): {e}"
                    ))
                })
        })?;
        Ok(StatementStats { url })
    }

    /// Forgets every count so far (the whole cluster's).
    ///
    /// # Errors
    /// [`ClusterError`] when the database cannot be reached.
    pub fn reset(&self) -> Result<(), ClusterError> {
        let url = self.url.clone();
        block_on(async move {
            let client = admin(&url, "plan-test-stats").await?;
            client
                .batch_execute("SELECT pg_stat_statements_reset()")
                .await
                .map_err(|e| ClusterError(format!("cannot reset the statement counts: {e}")))
        })
    }

    /// The top-level statements this database ran since the last reset, other than
    /// transaction control (`BEGIN`, `COMMIT`, ...) and these counts' own, most run
    /// first.
    ///
    /// # Errors
    /// [`ClusterError`] when the database cannot be reached.
    pub fn counts(&self) -> Result<Vec<StatementCount>, ClusterError> {
        let url = self.url.clone();
        block_on(async move {
            let client = admin(&url, "plan-test-stats").await?;
            let rows = client
                .query(
                    "SELECT query, sum(calls)::bigint AS calls,
                            (sum(total_exec_time) / greatest(sum(calls), 1))::float8
                     FROM pg_stat_statements
                     WHERE toplevel
                       AND dbid = (SELECT oid FROM pg_database
                                   WHERE datname = current_database())
                       AND query !~* '^\\s*(BEGIN|COMMIT|ROLLBACK|START TRANSACTION|END|SAVEPOINT|RELEASE)\\M'
                       AND query !~* 'pg_stat_statements'
                     GROUP BY query ORDER BY calls DESC, query",
                    &[],
                )
                .await
                .map_err(|e| ClusterError(format!("cannot read the statement counts: {e}")))?;
            Ok(rows
                .iter()
                .map(|r| StatementCount {
                    query: r.get(0),
                    calls: r.get(1),
                    mean_ms: r.get(2),
                })
                .collect())
        })
    }
}

/// The application name of the connections [`TempCluster::hold_every_connection`] holds.
const HOLDER: &str = "plan-test-holder";

/// Connections a test holds ([`TempCluster::hold_every_connection`],
/// [`TempCluster::stall_writes`]) until dropped.
#[derive(Debug)]
pub struct HeldConnections {
    /// How many connections are held.
    pub count: usize,
    release: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HeldConnections {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `f` on a runtime of its own (the cluster's helpers are blocking).
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot start a runtime: {e}"))
        .block_on(f)
}

/// A plain connection as the superuser, named `name` in `pg_stat_activity`.
async fn admin(url: &str, name: &str) -> Result<tokio_postgres::Client, ClusterError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| ClusterError(format!("bad URL {url}: {e}")))?;
    config.application_name(name);
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| ClusterError(format!("cannot connect to {url}: {e}")))?;
    tokio::spawn(connection);
    Ok(client)
}

/// The directory with `initdb` and `pg_ctl`.
fn find_bin_dir() -> Result<PathBuf, ClusterError> {
    find_bin_dir_in(
        std::env::var_os("PLAN_POSTGRES_BIN").map(PathBuf::from),
        Path::new("/usr/lib/postgresql"),
        std::env::var_os("PATH"),
    )
}

fn find_bin_dir_in(
    explicit: Option<PathBuf>,
    debian: &Path,
    path: Option<std::ffi::OsString>,
) -> Result<PathBuf, ClusterError> {
    if let Some(dir) = explicit {
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
        return Err(ClusterError(format!(
            "PLAN_POSTGRES_BIN={} holds no initdb: point it at PostgreSQL's bin directory",
            dir.display()
        )));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(debian)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    for dir in path.iter().flat_map(std::env::split_paths) {
        if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
            return Ok(dir);
        }
    }
    Err(ClusterError(format!(
        "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: these tests need a \
         real PostgreSQL server. Install the `postgresql` package (`apt-get install \
         postgresql`; `cargo xtask test` does it), or point PLAN_POSTGRES_BIN at the \
         directory holding initdb; set {SKIP_VAR}=1 to skip these tests instead"
    )))
}

/// `/tmp/plan-pg-XXXX` (mode 0755, so the cluster's user can reach it) with `data` and
/// `run` owned by that user.
fn make_dirs(run_as: Option<&str>) -> Result<PathBuf, ClusterError> {
    use std::os::unix::fs::PermissionsExt as _;
    let err = |what: &str, e: &dyn fmt::Display| ClusterError(format!("{what}: {e}"));
    // As root, under /tmp: a TMPDIR elsewhere may not be reachable by the cluster's user.
    let base = match run_as {
        Some(_) => PathBuf::from("/tmp"),
        None => std::env::temp_dir(),
    };
    let dir = base.join(format!("plan-pg-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).map_err(|e| err("cannot create the cluster directory", &e))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| err("cannot set the cluster directory's mode", &e))?;
    let owner = match run_as {
        Some(name) => Some(
            nix::unistd::User::from_name(name)
                .map_err(|e| err("cannot look up the postgres user", &e))?
                .ok_or_else(|| {
                    ClusterError(format!(
                        "there is no `{name}` user to run PostgreSQL as (it refuses to run as \
                         root): install the `postgresql` package, which creates it"
                    ))
                })?,
        ),
        None => None,
    };
    for sub in ["data", "run"] {
        let path = dir.join(sub);
        std::fs::create_dir(&path).map_err(|e| err("cannot create the cluster directory", &e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err("cannot set the cluster directory's mode", &e))?;
        if let Some(user) = &owner {
            chown(&path, user)?;
        }
    }
    Ok(dir)
}

fn chown(path: &Path, user: &nix::unistd::User) -> Result<(), ClusterError> {
    std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw())).map_err(|e| {
        ClusterError(format!(
            "cannot give {} to the `{}` user: {e}",
            path.display(),
            user.name
        ))
    })
}

fn free_port() -> Result<u16, ClusterError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ClusterError(format!("cannot find a free port: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_version_is_chosen_and_a_missing_server_says_what_to_install() {
        let root = std::env::temp_dir().join(format!("plan-pg-bins-{:x}", rand::random::<u64>()));
        let err = find_bin_dir_in(None, &root, None).unwrap_err().to_string();
        assert!(err.contains("Install the `postgresql` package"), "{err}");
        assert!(err.contains("PLAN_SKIP_POSTGRES=1"), "{err}");
        for version in ["9", "15", "16"] {
            let bin = root.join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("initdb"), "").unwrap();
        }
        std::fs::create_dir_all(root.join("17/bin")).unwrap(); // no initdb: not a server
        assert_eq!(
            find_bin_dir_in(None, &root, None).unwrap(),
            root.join("16/bin")
        );
        let err = find_bin_dir_in(Some(root.join("17/bin")), &root, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no initdb"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
