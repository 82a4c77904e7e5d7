//! [`McpServerConfig`]: how to reach one MCP server (a command line run as a child process
//! or a streamable-HTTP URL), its name, environment, timeouts (start-up and each call) and
//! tool allow-list.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::McpError;

/// How long a server may take to answer one tool call, unless its configuration says
/// otherwise (`timeout_secs` in a `[[mcp]]` table).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a server may take to start, unless its configuration says otherwise
/// (`start_timeout_secs` in a `[[mcp]]` table): spawning it (or reaching its URL), the MCP
/// handshake and the first listing of its tools. Generous, because a launcher such as `npx`
/// may download or unpack the server first.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The environment variables a server started over stdio gets from this process, when
/// set: what programs and their launchers (`npx`, `uvx`) need to run, find their caches and
/// reach the network, and nothing else. API keys, database passwords and tokens stay out
/// unless a server's configuration names them (`env_pass`) or sets them (`env`). Names
/// ending in `*` are prefixes.
pub const PASSED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "TZ",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TMPDIR",
    "TMP",
    "TEMP",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_RUNTIME_DIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// Whether this process's variable `name` is passed to a stdio server configured with
/// `env_pass`.
pub(crate) fn passes(name: &str, env_pass: &[String]) -> bool {
    PASSED_ENV.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *p,
    }) || env_pass.iter().any(|n| n == name)
}

/// How a server is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum McpTransport {
    /// A child process speaking MCP over its stdin and stdout.
    Command {
        /// The program.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// A server speaking streamable HTTP at this `http(s)://` URL.
    Http {
        /// The URL.
        url: String,
    },
}

/// One MCP server: its name (which namespaces its tools), how to reach it, the environment
/// of its process, its timeouts and which of its tools a run may use.
///
/// ```
/// use std::time::Duration;
///
/// use plan_mcp::{McpServerConfig, McpTransport};
///
/// let server = McpServerConfig::parse("npx -y @modelcontextprotocol/server-everything@2026.8.31")?;
/// assert_eq!(server.name, "server-everything");
/// assert!(matches!(server.transport, McpTransport::Command { ref program, .. } if program == "npx"));
///
/// let remote = McpServerConfig::parse("https://mcp.example.com/mcp")?;
/// assert_eq!(remote.name, "mcp_example_com");
///
/// // Slow to start (npx downloading it), quick to answer.
/// let server = server
///     .with_start_timeout(Duration::from_secs(120))
///     .with_timeout(Duration::from_secs(10));
/// assert_eq!(server.start_timeout, Duration::from_secs(120));
/// # Ok::<(), plan_mcp::McpError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct McpServerConfig {
    /// The server's name (`[A-Za-z0-9_-]`); tools are namespaced `<name>__<tool>` when
    /// their names clash.
    pub name: String,
    /// How it is reached.
    pub transport: McpTransport,
    /// Environment variables set in the child process. A server started over stdio does
    /// not inherit this process's environment: it gets [`PASSED_ENV`] (the system's basics,
    /// never API keys), the variables named in [`env_pass`](Self::env_pass), and these.
    pub env: BTreeMap<String, String>,
    /// Names of this process's environment variables the child process also gets (for
    /// example the token a server needs), beyond [`PASSED_ENV`].
    pub env_pass: Vec<String>,
    /// How long starting the server may take: spawning it (or reaching its URL), the MCP
    /// handshake and the first listing of its tools, together.
    pub start_timeout: Duration,
    /// How long each tool call may take.
    pub timeout: Duration,
    /// Only these tools (by their name on the server) are offered; `None` offers all.
    pub tools: Option<Vec<String>>,
}

impl McpServerConfig {
    /// A server run as `program args...`, named after the program (or the package a
    /// launcher such as `npx` or `uvx` runs).
    pub fn command(program: impl Into<String>, args: Vec<String>) -> Self {
        let program = program.into();
        let name = command_name(&program, &args);
        Self::new(name, McpTransport::Command { program, args })
    }

    /// A server at a streamable-HTTP URL, named after its host.
    pub fn http(url: impl Into<String>) -> Self {
        let url = url.into();
        let name = url_name(&url);
        Self::new(name, McpTransport::Http { url })
    }

    fn new(name: String, transport: McpTransport) -> Self {
        Self {
            name,
            transport,
            env: BTreeMap::new(),
            env_pass: Vec::new(),
            start_timeout: DEFAULT_START_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            tools: None,
        }
    }

    /// A server from a `--mcp` spec: an `http://` or `https://` URL, or a command line
    /// (split on whitespace, with single and double quotes grouping words).
    ///
    /// # Errors
    /// [`McpError::Spec`] for an empty spec or unbalanced quotes.
    pub fn parse(spec: &str) -> Result<Self, McpError> {
        let trimmed = spec.trim();
        let bad = |message: &str| McpError::Spec {
            spec: spec.to_owned(),
            message: message.to_owned(),
        };
        if trimmed.is_empty() {
            return Err(bad(
                "it is empty; give a command line (`npx -y PACKAGE`) or an http(s):// URL",
            ));
        }
        if is_url(trimmed) {
            return Ok(Self::http(trimmed));
        }
        let mut words = split_words(trimmed)
            .ok_or_else(|| bad("a quote is not closed; close it or remove it"))?;
        if words.is_empty() {
            return Err(bad("it has no program to run"));
        }
        let program = words.remove(0);
        Ok(Self::command(program, words))
    }

    /// Renames the server (the name is sanitised to `[A-Za-z0-9_-]`).
    pub fn with_name(mut self, name: impl AsRef<str>) -> Self {
        self.name = sanitize(name.as_ref());
        self
    }

    /// Sets an environment variable of the child process.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Passes this process's environment variable `name` (if set) to the child process.
    pub fn with_env_pass(mut self, name: impl Into<String>) -> Self {
        self.env_pass.push(name.into());
        self
    }

    /// Sets the timeout of each tool call (not of starting the server: see
    /// [`with_start_timeout`](Self::with_start_timeout)).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the timeout of starting the server: spawning it (or reaching its URL), the MCP
    /// handshake and the first listing of its tools, together.
    pub fn with_start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Checks that neither timeout is zero, which would fail every start or every call.
    ///
    /// # Errors
    /// [`McpError::Spec`] naming the setting to raise.
    pub fn check_timeouts(&self) -> Result<(), McpError> {
        for (timeout, setting) in [
            (self.start_timeout, "start_timeout_secs"),
            (self.timeout, "timeout_secs"),
        ] {
            if timeout.is_zero() {
                return Err(McpError::Spec {
                    spec: self.describe(),
                    message: format!("`{setting}` must be at least 1 second, not 0"),
                });
            }
        }
        Ok(())
    }

    /// Offers only these tools (their names on the server).
    pub fn with_tools<I, S>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tools = Some(tools.into_iter().map(Into::into).collect());
        self
    }

    /// What the server is, for messages: the command line or the URL.
    pub fn describe(&self) -> String {
        match &self.transport {
            McpTransport::Command { program, args } => {
                let mut line = program.clone();
                for a in args {
                    line.push(' ');
                    line.push_str(a);
                }
                line
            }
            McpTransport::Http { url } => url.clone(),
        }
    }
}

/// Whether a spec is a URL rather than a command line.
pub(crate) fn is_url(spec: &str) -> bool {
    let lower = spec.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// `name` with every character outside `[A-Za-z0-9_-]` replaced by `_`; never empty.
pub fn sanitize(name: &str) -> String {
    let out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let out = out.trim_matches('_').to_owned();
    if out.is_empty() {
        "mcp".to_owned()
    } else {
        out
    }
}

/// Programs that run another program or package named by their first non-flag argument.
const LAUNCHERS: &[&str] = &[
    "npx", "npm", "pnpm", "bunx", "bun", "yarn", "uvx", "uv", "pipx", "node", "deno", "python",
    "python3", "docker", "podman", "env",
];

fn command_name(program: &str, args: &[String]) -> String {
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_owned();
    let program_base = base(program);
    let mut target = program_base.clone();
    if LAUNCHERS.contains(&program_base.as_str())
        && let Some(arg) = launched(args)
    {
        target = arg.to_owned();
    }
    // `@scope/name@1.2.3` → `name`; `dir/server.py` → `server`.
    let without_version = match target.rfind('@') {
        Some(i) if i > 0 => target[..i].to_owned(),
        _ => target,
    };
    let mut name = base(&without_version);
    for ext in [".js", ".mjs", ".cjs", ".ts", ".py"] {
        if let Some(stem) = name.strip_suffix(ext) {
            name = stem.to_owned();
        }
    }
    sanitize(&name)
}

/// Launcher options whose value is the next word (`--prefix DIR`).
const VALUE_OPTIONS: &[&str] = &[
    "--prefix",
    "--cache",
    "--registry",
    "--userconfig",
    "--from",
    "--with",
    "--python",
    "--directory",
    "--workdir",
    "-w",
    "-e",
    "--env",
    "--name",
    "-c",
    "--call",
    "--network",
];

/// What a launcher runs: the first word that is neither an option, an option's value, an
/// assignment nor a sub-command (`npm exec`, `uv run`, `docker run`); after `--`, the next
/// word.
fn launched(args: &[String]) -> Option<&str> {
    let sub_commands = ["exec", "run", "x", "tool", "dlx"];
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if word == "--" {
            return words.next().map(String::as_str);
        }
        if word.starts_with('-') {
            if VALUE_OPTIONS.contains(&word.as_str()) {
                words.next();
            }
            continue;
        }
        if word.contains('=') || sub_commands.contains(&word.as_str()) {
            continue;
        }
        return Some(word);
    }
    None
}

fn url_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority.rsplit('@').next().unwrap_or(authority);
    sanitize(host)
}

/// Splits a command line into words: whitespace separates, single quotes keep text as it
/// is, double quotes group words (a backslash escapes the next character outside single
/// quotes). `None` when a quote is not closed.
pub(crate) fn split_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => word.push(chars.next()?),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next()?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_named_after_the_package_a_launcher_runs() {
        let cases = [
            (
                "npx -y @modelcontextprotocol/server-filesystem /tmp",
                "server-filesystem",
            ),
            (
                "npx -y @modelcontextprotocol/server-everything@2026.8.31",
                "server-everything",
            ),
            ("uvx mcp-server-fetch", "mcp-server-fetch"),
            ("python3 servers/weather.py --port 1", "weather"),
            ("/usr/local/bin/my-server --flag", "my-server"),
            ("npm exec -- git.server", "git_server"),
            (
                "npx --offline --prefix '/t/npm' --no -- mcp-server-everything",
                "mcp-server-everything",
            ),
            ("docker run -i --rm -e KEY=1 mcp/github", "github"),
        ];
        for (spec, name) in cases {
            assert_eq!(McpServerConfig::parse(spec).unwrap().name, name, "{spec}");
        }
    }

    #[test]
    fn urls_are_named_after_their_host() {
        let s = McpServerConfig::parse("http://user:pw@127.0.0.1:8931/mcp").unwrap();
        assert_eq!(s.name, "127_0_0_1_8931");
        assert_eq!(
            s.transport,
            McpTransport::Http {
                url: "http://user:pw@127.0.0.1:8931/mcp".into()
            }
        );
    }

    #[test]
    fn quotes_group_words() {
        let s = McpServerConfig::parse(r#"node "my server.js" 'a b' c\ d"#).unwrap();
        assert_eq!(
            s.transport,
            McpTransport::Command {
                program: "node".into(),
                args: vec!["my server.js".into(), "a b".into(), "c d".into()]
            }
        );
        assert_eq!(s.name, "my_server");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let e = McpServerConfig::parse("  ").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = McpServerConfig::parse("node 'open")
            .unwrap_err()
            .to_string();
        assert!(e.contains("quote is not closed"), "{e}");
    }

    #[test]
    fn start_and_call_timeouts_are_separate() {
        let s = McpServerConfig::parse("npx -y server").unwrap();
        assert_eq!(s.start_timeout, DEFAULT_START_TIMEOUT);
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        let s = s
            .with_timeout(Duration::from_secs(1))
            .with_start_timeout(Duration::from_secs(90));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!(s.start_timeout, Duration::from_secs(90));
        assert!(s.check_timeouts().is_ok());
    }

    #[test]
    fn zero_timeouts_are_refused_naming_the_setting() {
        let s = McpServerConfig::parse("npx -y server").unwrap();
        let e = s
            .clone()
            .with_start_timeout(Duration::ZERO)
            .check_timeouts()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`start_timeout_secs` must be at least 1 second"),
            "{e}"
        );
        let e = s
            .with_timeout(Duration::ZERO)
            .check_timeouts()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`timeout_secs` must be at least 1 second"),
            "{e}"
        );
    }

    #[test]
    fn sanitize_keeps_model_tool_name_characters() {
        assert_eq!(sanitize("a.b/c d-e_f"), "a_b_c_d-e_f");
        assert_eq!(sanitize("..."), "mcp");
    }
}
