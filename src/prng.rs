//! Our own seeded PRNG (xoshiro256**, seeded through splitmix64) and integer probabilities.
//!
//! The protocol core and the simulator draw all randomness from here, never from a global or
//! thread-local generator, so one seed reproduces one run exactly. The algorithm is fixed by
//! this file, not by a dependency's version.

use std::fmt;

/// A probability as an exact fraction `numerator / denominator`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ratio {
    /// Favourable outcomes.
    pub numerator: u64,
    /// All outcomes (never zero).
    pub denominator: u64,
}

impl Ratio {
    /// Never.
    pub const ZERO: Ratio = Ratio {
        numerator: 0,
        denominator: 1,
    };

    /// `numerator / denominator`; panics if `denominator` is zero or the ratio exceeds one.
    #[must_use]
    pub const fn new(numerator: u64, denominator: u64) -> Ratio {
        assert!(
            denominator > 0 && numerator <= denominator,
            "a ratio is in [0, 1]"
        );
        Ratio {
            numerator,
            denominator,
        }
    }

    /// `percent / 100`.
    #[must_use]
    pub const fn percent(percent: u64) -> Ratio {
        Ratio::new(percent, 100)
    }

    /// Whether this ratio is at most `other` (exact, by cross-multiplication).
    #[must_use]
    pub const fn at_most(self, other: Ratio) -> bool {
        self.numerator as u128 * other.denominator as u128
            <= other.numerator as u128 * self.denominator as u128
    }

    /// Whether this ratio is zero.
    #[must_use]
    pub const fn is_zero(self) -> bool {
        self.numerator == 0
    }
}

impl fmt::Debug for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.denominator == 100 {
            write!(f, "{}%", self.numerator)
        } else {
            write!(f, "{}/{}", self.numerator, self.denominator)
        }
    }
}

/// splitmix64: one step, used to seed and to derive independent streams.
#[must_use]
pub const fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seeded generator.
#[derive(Clone, PartialEq, Eq)]
pub struct Prng {
    state: [u64; 4],
}

impl fmt::Debug for Prng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prng").finish_non_exhaustive()
    }
}

impl Prng {
    /// A generator whose whole stream is determined by `seed`.
    #[must_use]
    pub fn from_seed(seed: u64) -> Prng {
        let mut x = seed;
        let mut state = [0; 4];
        for word in &mut state {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            *word = splitmix64(x);
        }
        Prng { state }
    }

    /// An independent stream for `label` (e.g. a node id or a purpose), derived from `seed`.
    #[must_use]
    pub fn derive(seed: u64, label: u64) -> Prng {
        Prng::from_seed(splitmix64(seed ^ splitmix64(label.wrapping_add(0x5EED))))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.state[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.state[1] << 17;
        self.state[2] ^= self.state[0];
        self.state[3] ^= self.state[1];
        self.state[1] ^= self.state[2];
        self.state[0] ^= self.state[3];
        self.state[2] ^= t;
        self.state[3] = self.state[3].rotate_left(45);
        result
    }

    /// A uniform value in `0..bound` (`bound` > 0), without modulo bias.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0) has no values");
        // Lemire's multiply-shift with rejection.
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            let low = product as u64;
            if low >= bound.wrapping_neg() % bound {
                return (product >> 64) as u64;
            }
        }
    }

    /// A uniform value in `low..=high`.
    pub fn range_inclusive(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "empty range");
        if high - low == u64::MAX {
            return self.next_u64();
        }
        low + self.below(high - low + 1)
    }

    /// True with probability `ratio`.
    pub fn chance(&mut self, ratio: Ratio) -> bool {
        ratio.numerator > 0 && self.below(ratio.denominator) < ratio.numerator
    }

    /// A ratio drawn uniformly from `0..=max_percent` percent.
    pub fn percent_up_to(&mut self, max_percent: u64) -> Ratio {
        Ratio::percent(self.range_inclusive(0, max_percent))
    }

    /// A uniformly chosen element, or `None` for an empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len() as u64) as usize)
        }
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Prng::from_seed(42);
        let mut b = Prng::from_seed(42);
        let mut c = Prng::from_seed(43);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn stream_is_pinned() {
        // Guards the algorithm itself: a change here changes every recorded seed's run.
        let mut prng = Prng::from_seed(0);
        let first = prng.next_u64();
        let mut again = Prng::from_seed(0);
        assert_eq!(first, again.next_u64());
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut prng = Prng::from_seed(7);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let v = prng.below(10);
            assert!(v < 10);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(prng.range_inclusive(3, 3), 3);
    }

    #[test]
    fn chance_matches_the_ratio_roughly() {
        let mut prng = Prng::from_seed(9);
        assert!(!(0..1000).any(|_| prng.chance(Ratio::ZERO)));
        assert!(Ratio::new(1, 50).at_most(Ratio::percent(2)));
        assert!(!Ratio::new(3, 100).at_most(Ratio::new(1, 50)));
        assert!((0..1000).all(|_| prng.chance(Ratio::new(1, 1))));
        let hits = (0..10_000)
            .filter(|_| prng.chance(Ratio::percent(30)))
            .count();
        assert!((2_700..3_300).contains(&hits), "{hits}");
    }

    #[test]
    fn derived_streams_differ() {
        let mut a = Prng::derive(1, 1);
        let mut b = Prng::derive(1, 2);
        assert_ne!(a.next_u64(), b.next_u64());
    }
}
