//! A small seeded random number generator for `simulate`'s choices and
//! datagram loss.
//!
//! SplitMix64 (Steele, Lea and Flood, 2014) rather than the `rand` crate:
//! `--seed` must replay a demo exactly across releases, and `rand` does not
//! promise a stable stream for its standard generator between versions.
//! Eight lines of well-known arithmetic make that promise here.

/// SplitMix64: 64 bits of state, a full period of 2^64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// An independent stream for item `n` of a run seeded with `seed`.
    pub fn for_item(seed: u64, salt: u64, n: u64) -> SplitMix64 {
        let mut mixer = SplitMix64::new(seed ^ salt.rotate_left(32));
        let base = mixer.next_u64();
        SplitMix64::new(base.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, bound); `bound` 0 gives 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        // Lemire's multiply-shift: bias below 2^-64 * bound, fine here.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sequence() {
        // First outputs of SplitMix64 seeded with 1234567 (reference C code).
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn below_and_f64_stay_in_range() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..1000 {
            assert!(rng.below(6) < 6);
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
        }
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn item_streams_differ_and_repeat() {
        let a = SplitMix64::for_item(1, 2, 3).next_u64();
        assert_eq!(a, SplitMix64::for_item(1, 2, 3).next_u64());
        assert_ne!(a, SplitMix64::for_item(1, 2, 4).next_u64());
        assert_ne!(a, SplitMix64::for_item(1, 3, 3).next_u64());
    }
}
