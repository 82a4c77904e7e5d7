//! The sandbox escape and abuse suite: every case runs a real program under the bubblewrap
//! backend and checks the exact outcome (an errno or a limit) and that the host is
//! unchanged. Runs as root in CI, as CI runs; needs the Debian package `bubblewrap`.
#![cfg(target_os = "linux")]

mod sandbox_support;

use std::io::ErrorKind;
use std::time::Duration;

use plan_sandbox::{
    BwrapConfig, BwrapSandbox, Isolation, LimitHit, Limits, ProcessSandbox, Program, Sandbox,
    SandboxChoice, SandboxError,
};
use sandbox_support::*;

macro_rules! sandbox {
    () => {
        match bwrap().await {
            Some(s) => s,
            None => return,
        }
    };
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

// ---------------------------------------------------------------- network

#[tokio::test]
async fn tcp_to_a_host_listener_on_loopback_is_refused() {
    let s = sandbox!();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let out = run(
        &s,
        py(&format!(
            "print(attempt(lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2)))\n\
             print(attempt(lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM)))"
        )),
        quick(),
    )
    .await;
    assert_eq!(lines(&out.stdout), ["errno 1", "errno 1"], "{out:?}");
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        ErrorKind::WouldBlock,
        "the listener got a connection"
    );
}

#[tokio::test]
async fn udp_to_a_host_socket_is_refused() {
    let s = sandbox!();
    let host = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let port = host.local_addr().unwrap().port();
    let out = run(
        &s,
        py(&format!(
            "def send():\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'leak', ('127.0.0.1', {port}))\n\
             print(attempt(send))"
        )),
        quick(),
    )
    .await;
    assert_eq!(out.stdout, "errno 1\n", "{out:?}");
    let mut buf = [0u8; 16];
    assert_eq!(
        host.recv(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock,
        "a datagram arrived"
    );
}

#[tokio::test]
async fn dns_resolution_fails() {
    let s = sandbox!();
    let out = run(
        &s,
        py("try:\n    socket.getaddrinfo('example.com', 80)\n    print('resolved')\nexcept socket.gaierror as e:\n    print('gaierror')\n\
            print(os.path.exists('/etc/resolv.conf'))"),
        quick(),
    )
    .await;
    assert_eq!(lines(&out.stdout), ["gaierror", "False"], "{out:?}");
}

#[tokio::test]
async fn vsock_netlink_packet_and_raw_sockets_are_denied() {
    let s = sandbox!();
    let out = run(
        &s,
        py("for fam, ty, proto in [(40, socket.SOCK_STREAM, 0), (16, socket.SOCK_RAW, 0), \
            (17, socket.SOCK_RAW, 0), (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), \
            (socket.AF_UNIX, socket.SOCK_STREAM, 0)]:\n    print(attempt(lambda: socket.socket(fam, ty, proto)))"),
        quick(),
    )
    .await;
    // AF_VSOCK, AF_NETLINK, AF_PACKET, raw AF_INET denied by seccomp; AF_UNIX allowed.
    assert_eq!(
        lines(&out.stdout),
        ["errno 1", "errno 1", "errno 1", "errno 1", "ok"],
        "{out:?}"
    );
}

#[tokio::test]
async fn host_abstract_unix_sockets_are_unreachable() {
    let s = sandbox!();
    use std::os::linux::net::SocketAddrExt;
    let name = format!("plan-sandbox-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let out = run(
        &s,
        py(&format!(
            "print(attempt(lambda: socket.socket(socket.AF_UNIX).connect(b'\\0{name}')))"
        )),
        quick(),
    )
    .await;
    // A private network namespace has its own abstract socket namespace: ECONNREFUSED.
    assert_eq!(out.stdout, "errno 111\n", "{out:?}");
    assert_eq!(listener.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
}

// ---------------------------------------------------------------- secrets

#[tokio::test]
async fn secrets_in_home_are_invisible() {
    let s = sandbox!();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
    let canary =
        std::path::Path::new(&home).join(format!(".plan-sandbox-canary-{}", std::process::id()));
    std::fs::write(&canary, "canary-secret-home-4711").unwrap();
    let out = run(
        &s,
        py(&format!(
            "print(attempt(lambda: open({canary:?}).read()))\n\
             print(os.path.expanduser('~'))\n\
             print(' '.join(sorted(os.listdir('/'))))\n\
             print(attempt(lambda: open('/etc/shadow').read()))"
        )),
        quick(),
    )
    .await;
    std::fs::remove_file(&canary).unwrap();
    assert_eq!(
        lines(&out.stdout),
        [
            "errno 2",
            "/work",
            "bin dev etc lib lib64 proc program sbin tmp usr work",
            "errno 2"
        ],
        "{out:?}"
    );
    assert!(!out.stdout.contains("canary-secret"));
}

const ENV_CANARY: &str = "PLAN_SANDBOX_TEST_CANARY";

#[tokio::test]
async fn secrets_in_the_environment_are_invisible_even_in_proc_1_environ() {
    // The canary must be in this process's environment; setting it needs `unsafe`, so the
    // test re-runs itself with it set.
    if std::env::var_os(ENV_CANARY).is_none() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "secrets_in_the_environment_are_invisible_even_in_proc_1_environ",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_CANARY, "canary-secret-env-0815")
            .status()
            .unwrap();
        assert!(status.success(), "the re-run with the canary set failed");
        return;
    }
    let s = sandbox!();
    let out = run(
        &s,
        py("import glob\nseen = []\nfor p in ['/proc/self/environ', '/proc/1/environ'] + glob.glob('/proc/[0-9]*/environ'):\n    try:\n        data = open(p, 'rb').read()\n    except OSError:\n        continue\n    seen.append(p)\n    if b'canary-secret' in data:\n        print('LEAK', p)\n\
            print('/proc/1/environ' in seen)\n\
            print(open('/proc/1/environ', 'rb').read())\n\
            print(','.join(sorted(k for k in os.environ)))"),
        quick(),
    )
    .await;
    assert_eq!(
        lines(&out.stdout),
        ["True", "b''", "HOME,LANG,PATH,PWD,TMPDIR"],
        "{out:?}"
    );
}

// ---------------------------------------------------------------- files

#[tokio::test]
async fn writes_to_usr_etc_and_root_fail_read_only() {
    let s = sandbox!();
    let tag = std::process::id();
    let out = run(
        &s,
        py(&format!(
            "for p in ['/usr/plan-{tag}', '/usr/bin/plan-{tag}', '/etc/plan-{tag}', '/plan-{tag}', '/etc/ld.so.cache']:\n    print(attempt(lambda: open(p, 'a').write('x')))"
        )),
        quick(),
    )
    .await;
    // EROFS everywhere; the bound-in ld.so.cache is root's, so EACCES comes first there.
    assert_eq!(
        lines(&out.stdout),
        ["errno 30", "errno 30", "errno 30", "errno 30", "errno 13"],
        "{out:?}"
    );
    for p in [
        format!("/usr/plan-{tag}"),
        format!("/usr/bin/plan-{tag}"),
        format!("/etc/plan-{tag}"),
        format!("/plan-{tag}"),
    ] {
        assert!(
            !std::path::Path::new(&p).exists(),
            "{p} was created on the host"
        );
    }
}

#[tokio::test]
async fn tmp_is_private_and_host_tmp_is_untouched() {
    let s = sandbox!();
    let host_file = std::env::temp_dir().join(format!("plan-sandbox-host-{}", std::process::id()));
    let out = run(
        &s,
        py(&format!(
            "print(attempt(lambda: open('/tmp/{name}', 'w').write('x')))\nprint(sorted(os.listdir('/tmp')))",
            name = host_file.file_name().unwrap().to_str().unwrap()
        )),
        quick(),
    )
    .await;
    let name = host_file.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        lines(&out.stdout),
        ["ok".to_owned(), format!("['{name}']")],
        "{out:?}"
    );
    assert!(!host_file.exists(), "the sandbox wrote to the host's /tmp");
}

#[tokio::test]
async fn proc_sys_is_read_only() {
    let s = sandbox!();
    let before = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let out = run(
        &s,
        py("print(attempt(lambda: open('/proc/sys/kernel/core_pattern', 'w').write('|/work/pwn')))\n\
            print(attempt(lambda: open('/proc/sys/kernel/hostname', 'w').write('pwned')))"),
        quick(),
    )
    .await;
    assert_eq!(lines(&out.stdout), ["errno 30", "errno 30"], "{out:?}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        before
    );
}

#[tokio::test]
async fn symlinks_out_of_the_work_dir_are_not_followed() {
    let s = sandbox!();
    let out = run(
        &s,
        py("os.symlink('/etc/shadow', 'leak')\nos.symlink('/root', 'home')\nos.mkdir('d')\nos.symlink('/etc/passwd', 'd/p')\n\
            print(attempt(lambda: open('leak').read()))\nprint(attempt(lambda: os.listdir('home')))")
        .collect("leak")
        .collect("home/.bashrc")
        .collect("d/p"),
        quick(),
    )
    .await;
    // Inside, the targets do not exist; outside, the host refuses to follow the links.
    assert_eq!(lines(&out.stdout), ["errno 2", "errno 2"], "{out:?}");
    assert!(out.files.is_empty(), "{:?}", out.files);
    let reasons: Vec<_> = out
        .missing_files
        .iter()
        .map(|m| (m.path.as_str(), m.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("leak", "is a symlink (not followed)"),
            ("home/.bashrc", "is a symlink (not followed)"),
            ("d/p", "is a symlink (not followed)")
        ]
    );
}

#[tokio::test]
async fn input_paths_outside_the_work_dir_are_rejected() {
    let s = sandbox!();
    for bad in ["../escape", "/etc/passwd", "a/../../b"] {
        let err = s
            .run(&Program::python("pass").with_file(bad, "x"), &quick())
            .await
            .unwrap_err();
        assert!(
            matches!(err, SandboxError::InvalidProgram(_)),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains(bad), "{err}");
    }
}

#[tokio::test]
async fn input_files_stdin_and_declared_outputs_round_trip() {
    let s = sandbox!();
    let out = run(
        &s,
        Program::python(
            "import sys\ndata = open('in/data.txt').read()\nos = __import__('os')\nos.makedirs('out', exist_ok=True)\n\
             open('out/result.txt', 'w').write(data.upper() + sys.stdin.read())\nprint('done')",
        )
        .with_file("in/data.txt", "hello")
        .with_stdin(" world")
        .collect("out/result.txt")
        .collect("never-written.txt"),
        quick(),
    )
    .await;
    assert_eq!(out.stdout, "done\n", "{out:?}");
    assert_eq!(out.file("out/result.txt").unwrap().contents, b"HELLO world");
    assert_eq!(out.missing_files.len(), 1);
    assert_eq!(out.missing_files[0].reason, "not found");
    assert_eq!(out.isolation, Isolation::Bwrap);
}

// ---------------------------------------------------------------- privileges

#[tokio::test]
async fn namespace_and_mount_syscalls_are_denied() {
    let s = sandbox!();
    let out = run(
        &s,
        py(&format!(
            "print(sys_({unshare}, 0x10000000))\nprint(sys_({unshare}, 0x40000000))\n\
             print(_libc.mount(b'none', b'/tmp', b'tmpfs', 0, None) == 0 or f'errno {{ctypes.get_errno()}}')\n\
             fd = os.open('/proc/self/ns/net', os.O_RDONLY)\nprint(sys_({setns}, fd, 0))\n\
             print(attempt(lambda: os.chroot('/tmp')))\nprint(sys_({pivot}, 0, 0))",
            unshare = libc::SYS_unshare,
            setns = libc::SYS_setns,
            pivot = libc::SYS_pivot_root,
        )),
        quick(),
    )
    .await;
    assert_eq!(lines(&out.stdout), ["errno 1"; 6], "{out:?}");
}

#[tokio::test]
async fn no_new_privs_no_capabilities_and_never_host_root() {
    let s = sandbox!();
    let out = run(
        &s,
        py("st = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())\n\
            for k in ['Uid', 'Gid', 'NoNewPrivs', 'Seccomp', 'CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']:\n    print(k, ' '.join(st[k].split()))\n\
"),
        quick(),
    )
    .await;
    assert_eq!(
        lines(&out.stdout),
        [
            "Uid 65534 65534 65534 65534".to_owned(),
            "Gid 65534 65534 65534 65534".to_owned(),
            "NoNewPrivs 1".to_owned(),
            "Seccomp 2".to_owned(),
            "CapInh 0000000000000000".to_owned(),
            "CapPrm 0000000000000000".to_owned(),
            "CapEff 0000000000000000".to_owned(),
            "CapBnd 0000000000000000".to_owned(),
            "CapAmb 0000000000000000".to_owned(),
        ],
        "{out:?}"
    );
}

#[tokio::test]
async fn the_program_never_runs_as_host_root() {
    let s = sandbox!();
    let _turn = turn().await;
    let program = Program::bash("sleep 2.987656");
    let limits = quick();
    let run = s.run(&program, &limits);
    let watch = async {
        // The host's view of the sandboxed process: inside it is uid 65534 either way, but
        // only the switch before exec'ing bwrap makes it 65534 outside too. (Generous: the
        // sandbox may be slow to start on a loaded machine.)
        let end = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(uid) = host_uid_of("sleep 2.987656") {
                return Some(uid);
            }
            if std::time::Instant::now() > end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (out, uid) = tokio::join!(run, watch);
    assert!(out.unwrap().success());
    let expected = if is_root() {
        65534
    } else {
        nix::unistd::geteuid().as_raw()
    };
    assert_eq!(uid, Some(expected), "host uid of the sandboxed program");
}

#[tokio::test]
async fn ptrace_and_friends_are_denied() {
    let s = sandbox!();
    let out = run(
        &s,
        py(&format!(
            "for nr, args in [({ptrace}, (0, 0, 0, 0)), ({pvr}, (1, 0, 0, 0, 0, 0)), ({pvw}, (1, 0, 0, 0, 0, 0)), \
             ({uring}, (8, 0)), ({bpf}, (0, 0, 0)), ({perf}, (0, 0, -1, 0, 0)), ({keyctl}, (0, 0)), ({ufd}, (0,))]:\n    print(sys_(nr, *args))",
            ptrace = libc::SYS_ptrace,
            pvr = libc::SYS_process_vm_readv,
            pvw = libc::SYS_process_vm_writev,
            uring = libc::SYS_io_uring_setup,
            bpf = libc::SYS_bpf,
            perf = libc::SYS_perf_event_open,
            keyctl = libc::SYS_keyctl,
            ufd = libc::SYS_userfaultfd,
        )),
        quick(),
    )
    .await;
    assert_eq!(lines(&out.stdout), ["errno 1"; 8], "{out:?}");
}

#[tokio::test]
async fn host_processes_are_invisible_and_unsignallable() {
    let s = sandbox!();
    let me = std::process::id();
    let out = run(
        &s,
        py(&format!(
            "import signal\npids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\nprint(pids == [1, 2] or pids)\n\
             print(attempt(lambda: os.kill({me}, 0)))\nprint(attempt(lambda: os.kill({me}, signal.SIGKILL)))"
        )),
        quick(),
    )
    .await;
    assert_eq!(
        lines(&out.stdout),
        ["True", "errno 3", "errno 3"],
        "{out:?}"
    );
}

#[tokio::test]
async fn terminal_injection_with_tiocsti_is_denied() {
    let s = sandbox!();
    let out = run(
        &s,
        py("import fcntl, termios\nprint(attempt(lambda: fcntl.ioctl(0, termios.TIOCSTI, b'x')))\n\
            print(attempt(lambda: fcntl.ioctl(1, termios.TIOCSTI, b'x')))\nprint(os.getsid(0) == os.getpid() or os.getsid(0))"),
        quick(),
    )
    .await;
    assert_eq!(lines(&out.stdout)[..2], ["errno 1", "errno 1"], "{out:?}");
}

#[tokio::test]
async fn inherited_file_descriptors_are_closed() {
    let s = sandbox!();
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let secret = std::env::temp_dir().join(format!("plan-sandbox-fd-{}", std::process::id()));
    std::fs::write(&secret, "canary-secret-fd").unwrap();
    let file = std::fs::File::open(&secret).unwrap();
    // Leak it on purpose: clear close-on-exec, as careless host code might.
    fcntl(&file, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
    let out = run(
        &s,
        py("fds = []\nfor fd in range(3, 1024):\n    try:\n        os.fstat(fd)\n        fds.append(fd)\n    except OSError:\n        pass\nprint(fds)"),
        quick(),
    )
    .await;
    drop(file);
    std::fs::remove_file(&secret).unwrap();
    assert_eq!(out.stdout, "[]\n", "{out:?}");
}

// ---------------------------------------------------------------- limits

#[tokio::test]
async fn fork_bomb_hits_the_pids_limit_and_leaves_nothing() {
    let s = sandbox!();
    let _turn = turn().await;
    let program = py("while True:\n    os.fork()");
    let out = s
        .run(&program, &quick().with_max_processes(32))
        .await
        .unwrap();
    assert_eq!(out.limit_hit, Some(LimitHit::Pids), "{out:?}");
    assert_eq!(out.exit_code, 1);
    assert!(
        out.stderr.contains("BlockingIOError: [Errno 11]"),
        "{}",
        out.stderr
    );
    if is_root() {
        let end = std::time::Instant::now() + Duration::from_secs(30);
        while processes_of_uid(65534) > 0 && std::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(processes_of_uid(65534), 0, "sandbox processes survived");
    }
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_limit() {
    let s = sandbox!();
    let out = run(
        &s,
        py("chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))"),
        quick().with_memory_bytes(256 << 20),
    )
    .await;
    assert_eq!(out.limit_hit, Some(LimitHit::Memory), "{out:?}");
    assert_eq!(out.exit_code, 1);
    assert!(out.stderr.contains("MemoryError"), "{}", out.stderr);
}

#[tokio::test]
async fn cpu_spin_hits_the_cpu_limit() {
    let s = sandbox!();
    let out = run(&s, py("while True:\n    pass"), quick().with_cpu_secs(1)).await;
    assert_eq!(out.limit_hit, Some(LimitHit::Cpu), "{out:?}");
    assert_eq!(out.signal, Some(libc::SIGXCPU));
    assert_eq!(out.exit_code, 128 + libc::SIGXCPU);
}

#[tokio::test]
async fn sleeping_forever_times_out_and_leaves_no_process() {
    let s = sandbox!();
    let out = run(
        &s,
        Program::bash("sleep 987651"),
        quick().with_timeout(Duration::from_secs(1)),
    )
    .await;
    assert_eq!(out.limit_hit, Some(LimitHit::Timeout), "{out:?}");
    assert_eq!((out.exit_code, out.signal), (137, Some(libc::SIGKILL)));
    assert!(out.duration >= Duration::from_secs(1));
    assert!(
        gone("sleep 987651", Duration::from_secs(30)).await,
        "the sleeper survived"
    );
}

#[tokio::test]
async fn a_cancelled_run_leaves_no_process() {
    let s = sandbox!();
    let _turn = turn().await;
    let program = Program::bash("sleep 987653");
    let limits = quick().with_timeout(Duration::from_secs(600));
    // Dropped once its program runs, however long the sandbox takes to start it.
    tokio::select! {
        out = s.run(&program, &limits) => panic!("the run should still be going when dropped: {out:?}"),
        () = appears("sleep 987653") => {}
    }
    assert!(
        gone("sleep 987653", Duration::from_secs(30)).await,
        "the sleeper survived the dropped run"
    );
}

/// Waits until a host process carries `marker` (or panics after a minute).
async fn appears(marker: &str) {
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while !process_with_marker(marker) {
        assert!(
            std::time::Instant::now() < end,
            "no process {marker:?} after 60s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_daemon_does_not_survive_the_run() {
    let s = sandbox!();
    let out = run(
        &s,
        py("if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.execv('/usr/bin/sleep', ['sleep', '987652'])\n    os._exit(0)\nos.wait()\nimport time\ntime.sleep(0.2)\nprint('parent done')"),
        quick(),
    )
    .await;
    assert_eq!(out.stdout, "parent done\n", "{out:?}");
    assert!(out.success());
    assert!(
        gone("sleep 987652", Duration::from_secs(30)).await,
        "the daemon survived"
    );
}

#[tokio::test]
async fn stdout_flood_is_truncated_and_stopped() {
    let s = sandbox!();
    let out = run(
        &s,
        py("while True:\n    sys.stdout.write('x' * 65536)"),
        quick().with_max_output_bytes(100_000),
    )
    .await;
    assert_eq!(out.limit_hit, Some(LimitHit::Output), "{:?}", out.limit_hit);
    assert!(out.stdout_truncated && !out.stderr_truncated);
    assert_eq!(out.stdout.len(), 100_000);
    assert!(out.stdout.bytes().all(|b| b == b'x'));
}

#[tokio::test]
async fn stderr_flood_is_truncated_and_stopped() {
    let s = sandbox!();
    let out = run(
        &s,
        Program::bash(
            "while true; do echo 'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee' >&2; done",
        ),
        quick().with_max_output_bytes(10_000),
    )
    .await;
    assert_eq!(out.limit_hit, Some(LimitHit::Output));
    assert!(out.stderr_truncated && !out.stdout_truncated);
    assert_eq!(out.stderr.len(), 10_000);
    assert!(out.truncated());
}

#[tokio::test]
async fn a_huge_file_stops_at_the_file_size_limit_with_efbig() {
    let s = sandbox!();
    let out = run(
        &s,
        py("def big():\n    with open('big', 'wb') as f:\n        f.write(b'x' * (4 << 20))\nprint(attempt(big))\nprint(os.path.getsize('big'))")
            .collect("big"),
        quick().with_max_file_bytes(1 << 20),
    )
    .await;
    // Python ignores SIGXFSZ, so the write fails with EFBIG and the file stops at the limit.
    assert_eq!(lines(&out.stdout), ["errno 27", "1048576"], "{out:?}");
    assert_eq!(out.file("big").unwrap().contents.len(), 1 << 20);
    assert!(!out.file("big").unwrap().truncated);
}

#[tokio::test]
async fn a_huge_file_from_bash_is_killed_with_sigxfsz() {
    let s = sandbox!();
    let out = run(
        &s,
        Program::bash("head -c 4194304 /dev/zero > big"),
        quick().with_max_file_bytes(1 << 20),
    )
    .await;
    assert_eq!(out.limit_hit, Some(LimitHit::FileSize), "{out:?}");
    assert_eq!(
        (out.exit_code, out.signal),
        (128 + libc::SIGXFSZ, Some(libc::SIGXFSZ))
    );
}

#[tokio::test]
async fn many_files_fill_the_capped_tmp_then_fail_with_enospc() {
    let s = sandbox!();
    let out = run(
        &s,
        py("n = 0\nwhile True:\n    try:\n        with open(f'/tmp/f{n}', 'w') as f:\n            f.write('x')\n    except OSError as e:\n        print(f'errno {e.errno}')\n        break\n    n += 1\nprint(n < 1000)"),
        quick().with_tmp_bytes(1 << 20),
    )
    .await;
    assert_eq!(lines(&out.stdout), ["errno 28", "True"], "{out:?}");
}

#[tokio::test]
async fn many_files_in_the_work_dir_are_removed_after_the_run() {
    let root = temp_root("many-files");
    let Some(s) = bwrap_in(Some(root.clone())).await else {
        return;
    };
    let out = run(
        &s,
        py("for i in range(3000):\n    open(f'f{i}', 'w').write('x')\nos.makedirs('d/e')\nos.chmod('d', 0)\nprint(len(os.listdir('.')))"),
        quick(),
    )
    .await;
    assert_eq!(out.stdout, "3001\n", "{out:?}");
    let left: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
    assert!(left.is_empty(), "run dirs left behind: {left:?}");
    std::fs::remove_dir_all(&root).unwrap();
}

// ---------------------------------------------------------------- exits

#[tokio::test]
async fn exact_exit_code_stdout_and_stderr() {
    let s = sandbox!();
    let out = run(&s, Program::bash("echo out; echo err >&2; exit 7"), quick()).await;
    assert_eq!((out.exit_code, out.signal, out.limit_hit), (7, None, None));
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        ("out\n", "err\n")
    );
    assert!(!out.success() && !out.truncated());

    let out = run(&s, Program::python("print('fine')"), quick()).await;
    assert!(out.success(), "{out:?}");
    assert_eq!(
        (out.exit_code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "fine\n", "")
    );
}

#[tokio::test]
async fn python_failure_reports_the_traceback() {
    let s = sandbox!();
    let out = run(&s, Program::python("print('before')\n1 / 0"), quick()).await;
    assert_eq!((out.exit_code, out.signal, out.limit_hit), (1, None, None));
    assert_eq!(out.stdout, "before\n");
    assert!(out.stderr.starts_with("Traceback"), "{}", out.stderr);
    assert!(
        out.stderr
            .trim_end()
            .ends_with("ZeroDivisionError: division by zero"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn signals_follow_128_plus_signal() {
    let s = sandbox!();
    let out = run(
        &s,
        Program::python(
            "import os, signal\nprint('x', flush=True)\nos.kill(os.getpid(), signal.SIGTERM)",
        ),
        quick(),
    )
    .await;
    assert_eq!(
        (out.exit_code, out.signal, out.limit_hit),
        (143, Some(15), None),
        "{out:?}"
    );
    assert_eq!(out.stdout, "x\n");
    let out = run(&s, Program::bash("kill -SEGV $$"), quick()).await;
    assert_eq!(
        (out.exit_code, out.signal, out.limit_hit),
        (139, Some(11), None),
        "{out:?}"
    );
}

// ---------------------------------------------------------------- backends and choice

#[tokio::test]
async fn missing_bwrap_says_how_to_install_it() {
    let err =
        BwrapSandbox::new(BwrapConfig::default().with_bwrap("/nonexistent/bwrap")).unwrap_err();
    assert!(matches!(
        err,
        SandboxError::Unavailable {
            backend: "bwrap",
            ..
        }
    ));
    assert!(
        err.to_string().contains("apt-get install bubblewrap"),
        "{err}"
    );
}

#[tokio::test]
async fn missing_interpreter_is_named() {
    let Some(_) = bwrap().await else { return };
    let s =
        BwrapSandbox::new(BwrapConfig::default().with_python("/usr/bin/python-missing")).unwrap();
    let err = s.run(&Program::python("pass"), &quick()).await.unwrap_err();
    assert!(matches!(err, SandboxError::NoInterpreter { .. }), "{err}");
    assert!(err.to_string().contains("apt-get install python3"), "{err}");
    let s = BwrapSandbox::new(BwrapConfig::default().with_python("/root/.pyenv/shims/python3"))
        .unwrap();
    let err = s.run(&Program::python("pass"), &quick()).await.unwrap_err();
    assert!(err.to_string().contains("outside /usr"), "{err}");
}

#[tokio::test]
async fn sandbox_choice_parses_and_none_refuses() {
    for (s, c) in [
        ("auto", SandboxChoice::Auto),
        ("bwrap", SandboxChoice::Bwrap),
        ("process", SandboxChoice::Process),
        ("none", SandboxChoice::None),
    ] {
        assert_eq!(s.parse::<SandboxChoice>().unwrap(), c);
        assert_eq!(c.to_string(), s);
    }
    let err = "docker".parse::<SandboxChoice>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown sandbox `docker`: expected one of auto, bwrap, process, none"
    );
    let err = SandboxChoice::None.open().await.err().unwrap();
    assert!(matches!(err, SandboxError::Disabled));
    if bwrap().await.is_some() {
        let s = SandboxChoice::Auto.open().await.unwrap();
        assert_eq!(s.isolation(), Isolation::Bwrap);
    }
}

#[tokio::test]
async fn the_process_backend_limits_but_says_it_is_unisolated() {
    let s = ProcessSandbox::new();
    let out = run(&s, Program::bash("echo hi; exit 3"), quick()).await;
    assert_eq!(
        (out.exit_code, out.stdout.as_str(), out.isolation),
        (3, "hi\n", Isolation::Process)
    );
    assert!(!out.isolation.is_isolated());
    let out = run(
        &s,
        Program::bash("sleep 987654 & sleep 987655"),
        quick().with_timeout(Duration::from_secs(1)),
    )
    .await;
    assert_eq!(out.limit_hit, Some(LimitHit::Timeout));
    assert!(
        gone("sleep 98765", Duration::from_secs(30)).await,
        "the process group survived"
    );
    let out = run(
        &s,
        Program::python("while True: pass"),
        quick().with_cpu_secs(1),
    )
    .await;
    assert_eq!(
        (out.limit_hit, out.signal),
        (Some(LimitHit::Cpu), Some(libc::SIGXCPU))
    );
    let out = run(
        &s,
        Program::python("import json, os; print(json.dumps(sorted(os.environ)))"),
        quick(),
    )
    .await;
    assert_eq!(out.stdout, "[\"HOME\", \"LANG\", \"PATH\"]\n");
}

#[tokio::test]
async fn run_output_serializes_to_the_cli_contract() {
    let s = ProcessSandbox::new();
    let out = run(&s, Program::bash("echo hi"), quick()).await;
    let json = serde_json::to_value(&out).unwrap();
    let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "duration_ms",
            "exit_code",
            "isolation",
            "limit_hit",
            "signal",
            "stderr",
            "stdout",
            "truncated"
        ]
    );
    assert_eq!(json["isolation"], "process");
    assert_eq!(json["limit_hit"], serde_json::Value::Null);
    assert_eq!(json["stdout"], "hi\n");
}

#[test]
fn sandbox_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<BwrapSandbox>();
    check::<ProcessSandbox>();
    check::<std::sync::Arc<dyn Sandbox>>();
    check::<SandboxError>();
    check::<plan_sandbox::RunOutput>();
    let _ = Limits::default();
}
