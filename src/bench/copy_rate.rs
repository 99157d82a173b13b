//! How fast this machine copies large messages, measured in the run itself: the least the
//! node's copies of a 64 KiB message cost, so that the fan-out bound in RESULTS.md can tell
//! the copies from the rest of the node's work per message.

use std::hint::black_box;
use std::time::{Duration, Instant};

use super::report::Line;

/// Bytes between which blocks are copied: about what the node's copies cycle through in the
/// fan-out (a request ring and 4 event rings), so that they see the caches the node's do.
const SPAN: usize = 8 << 20;
/// How long to copy.
const DURATION: Duration = Duration::from_millis(500);

/// Copies `size`-byte blocks from one ring-sized buffer into another for half a second, and
/// returns the rate as a RESULT line (`bench=memcpy role=copy_rate size=… GBps=…`).
#[must_use]
pub fn measure(size: usize) -> Line {
    let size = size.clamp(1, SPAN);
    let source = vec![0x5A_u8; SPAN];
    let mut target = vec![0_u8; SPAN];
    let blocks = SPAN / size;
    let mut block = 0;
    let mut copied = 0_u64;
    let start = Instant::now();
    while start.elapsed() < DURATION {
        for _ in 0..16 {
            let at = block * size;
            target[at..at + size].copy_from_slice(black_box(&source[at..at + size]));
            block = (block + 1) % blocks;
        }
        black_box(&mut target);
        copied += 16 * size as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    #[allow(
        clippy::cast_precision_loss,
        reason = "bytes copied in half a second are far below 2^52"
    )]
    let gbps = copied as f64 / seconds / 1e9;
    Line::from_pairs([
        ("bench", "memcpy".to_string()),
        ("rep", "1".to_string()),
        ("role", "copy_rate".to_string()),
        ("size", size.to_string()),
        ("GBps", format!("{gbps:.2}")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_a_positive_figure_in_a_result_line() {
        let line = measure(65_536);
        assert_eq!(line.bench(), "memcpy");
        assert_eq!(line.number("size"), Some(65_536.0));
        assert!(
            line.number("GBps").is_some_and(|gbps| gbps > 0.0),
            "{line:?}"
        );
    }
}
