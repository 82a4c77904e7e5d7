//! Colours: only on a terminal that understands them (`TERM` set, not `dumb`), never with
//! `NO_COLOR` (https://no-color.org).

use std::io::IsTerminal;

use anstyle::{AnsiColor, Style};

/// Whether `NO_COLOR` is set to a non-empty value.
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Whether `TERM` names a terminal that understands escape sequences: on Unix it must be
/// set and not `dumb` (on Windows only `dumb` is refused). indicatif draws nothing otherwise,
/// and colour libraries (anstream) stay plain.
pub fn term_understands_escapes() -> bool {
    match std::env::var_os("TERM") {
        Some(term) => !term.is_empty() && term != "dumb",
        None => cfg!(windows),
    }
}

/// Whether stderr is a terminal that can show colours and redraw lines in place.
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal() && term_understands_escapes()
}

/// Whether stderr gets colours.
pub fn stderr_colours() -> bool {
    stderr_is_terminal() && !no_color()
}

/// Whether stdout gets colours.
pub fn stdout_colours() -> bool {
    std::io::stdout().is_terminal() && term_understands_escapes() && !no_color()
}

/// The styles used in output; all plain when colours are off.
#[derive(Clone, Copy, Debug)]
pub struct Palette {
    /// Errors and failed steps.
    pub error: Style,
    /// Completed steps, success.
    pub ok: Style,
    /// Retries, fallbacks, replans.
    pub warn: Style,
    /// Ids, headings.
    pub bold: Style,
    /// Timestamps, secondary text.
    pub dim: Style,
}

impl Palette {
    /// Colours when `enabled`, plain otherwise.
    pub fn new(enabled: bool) -> Self {
        if !enabled {
            let plain = Style::new();
            return Palette {
                error: plain,
                ok: plain,
                warn: plain,
                bold: plain,
                dim: plain,
            };
        }
        Palette {
            error: Style::new().bold().fg_color(Some(AnsiColor::Red.into())),
            ok: Style::new().fg_color(Some(AnsiColor::Green.into())),
            warn: Style::new().fg_color(Some(AnsiColor::Yellow.into())),
            bold: Style::new().bold(),
            dim: Style::new().dimmed(),
        }
    }

    /// The palette for stderr.
    pub fn stderr() -> Self {
        Self::new(stderr_colours())
    }

    /// The palette for stdout.
    pub fn stdout() -> Self {
        Self::new(stdout_colours())
    }
}
