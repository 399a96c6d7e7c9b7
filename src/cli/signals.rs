//! SIGINT, SIGTERM and SIGHUP (ctrlc's `termination` feature) stop the running command: the
//! handler sets the library's cancellation flag, which every output write and evaluation chunk
//! checks, so the job unwinds, its temporary files are dropped (removed), and `run` exits 130.
//! A job busy in one long step is not waited on for more than [`GRACE`]: its temporary files
//! are removed and the process exits. A second signal exits at once, the same way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use qforge::formats::{atomic, cancel};

/// Signals received so far.
static SIGNALS: AtomicUsize = AtomicUsize::new(0);

/// How long a cancelled job may take to unwind before the process exits anyway.
const GRACE: Duration = Duration::from_millis(1500);

/// The exit status of an interrupted command (128 + SIGINT, as shells report Ctrl-C).
pub const EXIT_INTERRUPTED: i32 = 130;

/// Install the handler (once, at start-up). If the embedding environment already installed
/// one, it is kept and signals behave as it decides.
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        let n = SIGNALS.fetch_add(1, Ordering::SeqCst);
        cancel::request();
        if n == 0 {
            eprintln!("qforge: interrupted; stopping and removing temporary files");
            std::thread::spawn(|| {
                std::thread::sleep(GRACE);
                exit_now();
            });
        } else {
            exit_now();
        }
    });
}

/// Whether a signal asked this process to stop.
pub fn interrupted() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

fn exit_now() -> ! {
    atomic::remove_pending();
    eprintln!("qforge: interrupted; no output written");
    std::process::exit(EXIT_INTERRUPTED);
}
