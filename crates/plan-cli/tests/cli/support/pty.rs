//! Running `plan` with stderr on a pseudo-terminal: what a user at a terminal sees.
//!
//! The pty's file descriptors are opened close-on-exec, so commands that other tests spawn
//! at the same time never inherit them and the master reads end of file (EIO on Linux) as
//! soon as our child exits.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;

/// Columns of the test terminal.
pub const COLS: u16 = 100;
/// Rows of the test terminal.
pub const ROWS: u16 = 30;

/// How long a run may take before the test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(120);

/// What a run on a terminal left: the bytes the terminal got, stdout (a pipe) and the exit
/// status.
pub struct TermRun {
    /// Everything written to the terminal (stderr), as the master read it.
    pub terminal: Vec<u8>,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    pub status: ExitStatus,
}

impl TermRun {
    /// The terminal bytes as text (the line discipline turned `\n` into `\r\n`).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.terminal).into_owned()
    }

    /// The terminal text without escape sequences, carriage returns folded away.
    pub fn plain(&self) -> String {
        strip_escapes(&self.text()).replace("\r\n", "\n")
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The screen after the run, as a terminal of [`COLS`] x [`ROWS`] shows it: rows scrolled
    /// off the top included, rows the terminal wrapped joined again, trailing blanks dropped.
    pub fn screen(&self) -> String {
        let size = |n: u16| std::num::NonZeroU16::new(n).unwrap();
        let mut parser = vt100::Parser::new(size(ROWS), size(COLS), 1000);
        parser.process(&self.terminal);
        let screen = parser.screen_mut();
        // Scroll back as far as there is history, then read page by page downwards.
        screen.set_scrollback(usize::MAX);
        let mut offset = screen.scrollback();
        let mut rows: Vec<(String, bool)> = Vec::new();
        loop {
            screen.set_scrollback(offset);
            let take = if offset == 0 {
                ROWS as usize
            } else {
                (ROWS as usize).min(offset)
            };
            let page: Vec<String> = screen.rows(0, COLS).take(take).collect();
            for (i, text) in page.into_iter().enumerate() {
                rows.push((text, screen.row_wrapped(i as u16)));
            }
            if offset == 0 {
                break;
            }
            offset = offset.saturating_sub(ROWS as usize);
        }
        let mut text = String::new();
        for (row, wrapped) in rows {
            if wrapped {
                text.push_str(&row);
            } else {
                text.push_str(row.trim_end());
                text.push('\n');
            }
        }
        text.truncate(text.trim_end().len());
        text
    }

    #[track_caller]
    pub fn expect_code(&self, expected: i32) {
        assert_eq!(
            self.status.code(),
            Some(expected),
            "exit status {:?}\n--- stdout\n{}\n--- terminal\n{}",
            self.status,
            self.stdout(),
            self.plain()
        );
    }
}

/// Runs `cmd` with stderr on a new pty of [`COLS`] x [`ROWS`] and stdout on a pipe (stdin
/// stays as the command has it). Fails the test, killing the child, if the run takes longer
/// than two minutes.
pub fn run_on_pty(mut cmd: Command) -> TermRun {
    let (master, slave) = open_pty();
    cmd.stderr(Stdio::from(slave)).stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // The command holds our copy of the slave: drop it, so only the child has it open and
    // the master sees end of file when the child is gone.
    drop(cmd);

    let terminal = Arc::new(Mutex::new(Vec::new()));
    let (term_done, term_rx) = std::sync::mpsc::channel();
    {
        let terminal = terminal.clone();
        std::thread::spawn(move || {
            let mut master = File::from(master);
            let mut buf = [0u8; 4096];
            loop {
                match master.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => terminal.lock().unwrap().extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // EIO: every slave descriptor is closed.
                    Err(_) => break,
                }
            }
            let _ = term_done.send(());
        });
    }
    let mut out = child.stdout.take().unwrap();
    let (out_tx, out_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = out.read_to_end(&mut bytes);
        let _ = out_tx.send(bytes);
    });

    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            let seen = strip_escapes(&String::from_utf8_lossy(&terminal.lock().unwrap()));
            panic!("plan did not finish in {DEADLINE:?} on a terminal; it showed:\n{seen}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let left = DEADLINE.saturating_sub(start.elapsed()) + Duration::from_secs(10);
    if term_rx.recv_timeout(left).is_err() {
        panic!("the terminal was not closed after plan exited");
    }
    let stdout = out_rx.recv_timeout(left).unwrap();
    let terminal = std::mem::take(&mut *terminal.lock().unwrap());
    TermRun {
        terminal,
        stdout,
        status,
    }
}

/// A pty pair, both ends close-on-exec, the terminal [`COLS`] x [`ROWS`].
fn open_pty() -> (OwnedFd, OwnedFd) {
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .unwrap();
    rustix::pty::grantpt(&master).unwrap();
    rustix::pty::unlockpt(&master).unwrap();
    let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    rustix::termios::tcsetwinsize(
        &slave,
        Winsize {
            ws_row: ROWS,
            ws_col: COLS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .unwrap();
    (master, slave)
}

/// One escape sequence in terminal output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Escape {
    /// `ESC [ params final`: `final` is `m` for colours and attributes (SGR), a letter for
    /// cursor movement and erasing.
    Csi { params: String, fin: char },
    /// Any other escape (`ESC` and one character, or an OSC string).
    Other(String),
}

impl Escape {
    /// An SGR that sets a colour or attribute (anything but a bare reset: `ESC[m`, `ESC[0m`).
    pub fn is_colour(&self) -> bool {
        match self {
            Escape::Csi { params, fin: 'm' } => params
                .split(';')
                .any(|p| !p.is_empty() && p.parse::<u32>() != Ok(0)),
            _ => false,
        }
    }

    /// Cursor movement, erasing and other redraw controls.
    pub fn is_redraw(&self) -> bool {
        matches!(self, Escape::Csi { fin, .. } if *fin != 'm')
    }
}

/// The escape sequences in `text`, in order.
pub fn escapes(text: &str) -> Vec<Escape> {
    let mut found = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            continue;
        }
        match chars.next() {
            Some('[') => {
                let mut params = String::new();
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        found.push(Escape::Csi { params, fin: c });
                        break;
                    }
                    params.push(c);
                }
            }
            Some(']') => {
                let mut body = String::new();
                for c in chars.by_ref() {
                    if c == '\x07' {
                        break;
                    }
                    body.push(c);
                }
                found.push(Escape::Other(format!("]{body}")));
            }
            Some(c) => found.push(Escape::Other(c.to_string())),
            None => found.push(Escape::Other(String::new())),
        }
    }
    found
}

/// `text` without its escape sequences.
pub fn strip_escapes(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            plain.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => chars.by_ref().take_while(|c| *c != '\x07').for_each(drop),
            _ => {}
        }
    }
    plain
}
