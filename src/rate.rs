//! One rate (a tariff) and the billing arithmetic: increments, connect fee, rounding.

use crate::money::Rounding;

/// "Since forever": a rate with no `effective_from`.
pub const OPEN_START: i64 = i64::MIN;
/// "Until further notice": a rate with no `effective_to`.
pub const OPEN_END: i64 = i64::MAX;

/// The priced part of a deck row, shared by every prefix that carries the same terms.
///
/// Real decks price thousands of prefixes of one destination identically, so the deck stores
/// each distinct tariff once and the prefixes point at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tariff {
    /// Index of the destination name in the deck's name table.
    pub destination: u32,
    /// Price per minute, in the deck's sub-units.
    pub rate: i64,
    /// Charged once per answered call, in the deck's sub-units.
    pub connect_fee: i64,
    pub initial_increment: u32,
    pub subsequent_increment: u32,
    /// Inclusive start, seconds since the epoch ([`OPEN_START`] if none).
    pub effective_from: i64,
    /// Exclusive end, seconds since the epoch ([`OPEN_END`] if none).
    pub effective_to: i64,
}

impl Tariff {
    pub fn in_force(&self, at: i64) -> bool {
        self.effective_from <= at && at < self.effective_to
    }

    pub fn billed_seconds(&self, duration: u64) -> u64 {
        billed_seconds(duration, self.initial_increment, self.subsequent_increment)
    }

    /// Cost of a call of `duration` seconds, in the deck's sub-units; `None` if it does not
    /// fit in 64 bits.
    pub fn cost(&self, duration: u64, rounding: Rounding) -> Option<i64> {
        call_cost(
            self.rate,
            self.connect_fee,
            self.billed_seconds(duration),
            rounding,
        )
    }
}

/// Billed seconds: 0 for 0; the initial increment if `duration <= initial`; then whole
/// subsequent increments ("60/60", "6/6", "30/6", "1/1" billing).
pub fn billed_seconds(duration: u64, initial: u32, subsequent: u32) -> u64 {
    let initial = u64::from(initial);
    let subsequent = u64::from(subsequent.max(1));
    if duration == 0 {
        0
    } else if duration <= initial {
        initial
    } else {
        initial + (duration - initial).div_ceil(subsequent) * subsequent
    }
}

/// `connect_fee + rate * billed / 60`, the per-minute part rounded by `rounding`.
///
/// The connect fee is charged whenever this is asked, also for 0 billed seconds: a call that
/// was answered and cleared at once still took the carrier's connection. Callers cost only
/// answered calls. `None` when the cost does not fit in 64 bits: an error, never a cap.
pub fn call_cost(rate: i64, connect_fee: i64, billed: u64, rounding: Rounding) -> Option<i64> {
    let per_minute = rounding.divide(i128::from(rate) * i128::from(billed), 60);
    i64::try_from(i128::from(connect_fee) + per_minute).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_increments() {
        assert_eq!(billed_seconds(0, 60, 60), 0);
        assert_eq!(billed_seconds(1, 60, 60), 60);
        assert_eq!(billed_seconds(61, 60, 60), 120);
        assert_eq!(billed_seconds(7, 6, 6), 12);
        assert_eq!(billed_seconds(31, 30, 6), 36);
        assert_eq!(billed_seconds(29, 30, 6), 30);
        assert_eq!(billed_seconds(37, 1, 1), 37);
    }

    #[test]
    fn cost_rounds_once_per_call() {
        // 0.0123/min for 61 s on 1/1: 0.0123 * 61 / 60 = 0.012505 exactly.
        assert_eq!(call_cost(12_300, 0, 61, Rounding::Up), Some(12_505));
        // 0.01/min for 7 s: 0.0011666.. rounds up to 0.001167 at 1e-6.
        assert_eq!(call_cost(10_000, 0, 7, Rounding::Up), Some(1_167));
        assert_eq!(call_cost(10_000, 0, 7, Rounding::Down), Some(1_166));
        assert_eq!(call_cost(10_000, 0, 7, Rounding::HalfUp), Some(1_167));
        assert_eq!(call_cost(10_000, 500, 0, Rounding::Up), Some(500));
        assert_eq!(call_cost(i64::MAX, 0, 61, Rounding::Up), None);
    }

    #[test]
    fn windows_are_half_open() {
        let t = Tariff {
            destination: 0,
            rate: 1,
            connect_fee: 0,
            initial_increment: 1,
            subsequent_increment: 1,
            effective_from: 100,
            effective_to: 200,
        };
        assert!(!t.in_force(99));
        assert!(t.in_force(100));
        assert!(t.in_force(199));
        assert!(!t.in_force(200));
    }
}
