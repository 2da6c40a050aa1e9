//! Standard output that its reader may stop reading: `coalmine validate f | head -2`
//! ends quietly, as `cat` would, instead of panicking on the closed pipe.

use std::io::{ErrorKind, Write};

use crate::Exit;

/// Writes `text` to stdout as it is. A reader that has gone ends the command quietly;
/// any other failure to write ends it saying so.
pub fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(Exit::Ok as i32);
        }
        eprintln!("coalmine: cannot write to standard output: {e}");
        std::process::exit(Exit::Error as i32);
    }
}

/// `println!` for the command's results, through [`print`].
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::out::print(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for the command's results, through [`print`].
macro_rules! say_part {
    ($($arg:tt)*) => {
        $crate::out::print(&format!($($arg)*))
    };
}

pub(crate) use {say, say_part};
