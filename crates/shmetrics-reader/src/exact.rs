//! Exact sums of per-process values, rounded once.
//!
//! A merged counter (or `_sum`, or `sum`-mode gauge) adds one value per process. Adding them
//! as `f64`s rounds after every addition, so the result depends on the order of the
//! additions, and that order changes when a process dies (its value moves into the dead
//! baseline) or is compacted (into the archive): `0.1 + 0.1 + 0.4` read `0.6000000000000001`
//! with three live processes and `0.6` after two of them died, and Prometheus took the drop
//! for a counter reset. [`ExactSum`] keeps the sum exactly (integer words in an `i128`,
//! floats as non-overlapping partials, Shewchuk's algorithm as in Python's `math.fsum`) and
//! [`ExactSum::value`] rounds it once, to the nearest `f64` (ties to even). The result is
//! independent of the order and grouping of the additions, and since rounding to nearest is
//! monotone, a sum of non-negative values never goes down as values are added or grow.
//!
//! Non-finite values are summed apart (any NaN, or infinities of both signs, give NaN). An
//! exact sum beyond the `f64` range (an intermediate partial overflows) becomes an infinity
//! of its sign, as the rounded sum would.

/// Fractional bits of the fixed-point accumulator: it holds multiples of 2^-64.
const FRAC_BITS: i32 = 64;
/// 2^-64, exact.
const UNIT: f64 = 1.0 / 18_446_744_073_709_551_616.0;
/// Largest left shift of a 53-bit mantissa into the accumulator: values below 2^51, so
/// thousands of them add up before the `i128` could overflow (checked anyway).
const MAX_SHIFT: i32 = 62;

/// An exact sum of `f64` and integer values, rounded once when read. See the module docs.
///
/// ```
/// use shmetrics_reader::exact::ExactSum;
/// let mut s = ExactSum::default();
/// for v in [0.4, 0.1, 0.1] {
///     s.add(v);
/// }
/// assert_eq!(s.value(), 0.6000000000000001); // 0.4 + 0.1 + 0.1 in f64 gives 0.6
/// ```
///
/// Values that are multiples of 2^-64 below 2^51 (latencies, token counts, byte counts,
/// counter increments: nearly everything a metric holds) add into a fixed-point `i128` in a
/// few instructions; anything else (tiny, huge or subnormal values, or an accumulator about
/// to overflow) goes to non-overlapping `f64` partials on the heap (Shewchuk's algorithm).
/// Either way the sum is exact.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExactSum {
    /// The fixed-point part, in units of 2^-64.
    fixed: i128,
    /// Finite partials, non-overlapping and in increasing magnitude, of what the fixed-point
    /// part cannot hold; `None` while everything fits it.
    #[allow(
        clippy::box_collection,
        reason = "one pointer, not three words, in every merged series' accumulator"
    )]
    slow: Option<Box<Vec<f64>>>,
    /// Sum of the non-finite values and of overflowed partials; `0.0` when there is none.
    special: f64,
}

impl ExactSum {
    /// Adds an integer exactly.
    #[inline]
    pub fn add_int(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        if n < 1 << 62
            && let Some(sum) = self.fixed.checked_add(i128::from(n) << FRAC_BITS)
        {
            self.fixed = sum;
            return;
        }
        // 32-bit pieces convert to f64 exactly.
        self.add_slow((n >> 32) as f64 * 4_294_967_296.0);
        self.add_slow((n & 0xFFFF_FFFF) as f64);
    }

    /// Adds `x` exactly.
    #[inline(always)]
    pub fn add(&mut self, x: f64) {
        // Inlined: an integral counter's float part is always zero, and a value from 2^-12
        // to 2^51 (a latency, a size, a count) is an integer number of units shifted left.
        if x == 0.0 {
            return;
        }
        let bits = x.to_bits();
        let shift = ((bits >> 52) & 0x7FF) as i32 - 1075 + FRAC_BITS;
        if (0..=MAX_SHIFT).contains(&shift) {
            // A non-negative shift means a normal exponent (neither 0 nor 0x7FF). The shift
            // as a 64 × 64-bit multiplication: one instruction, where a variable 128-bit
            // shift takes several and a branch.
            let mantissa = (bits & ((1 << 52) - 1)) | (1 << 52);
            let units = (u128::from(mantissa) * u128::from(1u64 << shift)) as i128;
            let sum = if x < 0.0 {
                self.fixed.checked_sub(units)
            } else {
                self.fixed.checked_add(units)
            };
            if let Some(sum) = sum {
                self.fixed = sum;
                return;
            }
        }
        self.add_nonzero(x);
    }

    #[inline(never)]
    fn add_nonzero(&mut self, x: f64) {
        let bits = x.to_bits();
        let exponent = ((bits >> 52) & 0x7FF) as i32;
        if exponent == 0x7FF {
            self.special += x;
            return;
        }
        // A normal x is mantissa × 2^(exponent - 1075); subnormals take the slow path.
        let mantissa = (bits & ((1 << 52) - 1)) | (1 << 52);
        let shift = exponent - 1075 + FRAC_BITS;
        let units = if exponent == 0 || shift > MAX_SHIFT {
            None
        } else if shift >= 0 {
            Some(i128::from(mantissa) << shift)
        } else if shift >= -52 && mantissa.trailing_zeros() >= shift.unsigned_abs() {
            Some(i128::from(mantissa >> shift.unsigned_abs()))
        } else {
            None
        };
        let Some(units) = units else {
            return self.add_slow(x);
        };
        let units = if x < 0.0 { -units } else { units };
        match self.fixed.checked_add(units) {
            Some(sum) => self.fixed = sum,
            None => {
                // Move the accumulator into the partials, exactly, and start it again.
                let full = std::mem::replace(&mut self.fixed, units);
                for piece in pieces(full) {
                    self.add_slow(piece);
                }
            }
        }
    }

    /// Adds the sum `other` holds, exactly: the fold of two groups of processes joined.
    /// (The exact sum is the same whatever the grouping; only a partial sum leaving the
    /// `f64` range, above 1.8e308, becomes an infinity where another grouping's did not.)
    pub(crate) fn absorb(&mut self, other: ExactSum) {
        self.special += other.special;
        match self.fixed.checked_add(other.fixed) {
            Some(sum) => self.fixed = sum,
            None => pieces(other.fixed).for_each(|piece| self.add_slow(piece)),
        }
        for part in other.slow.into_iter().flat_map(|parts| *parts) {
            self.add_slow(part);
        }
    }

    /// Adds a finite `x` to the partials (Shewchuk's grow-expansion: each step splits
    /// x + p into the rounded sum and its exact error; non-zero errors stay, smallest
    /// first).
    #[cold]
    fn add_slow(&mut self, x: f64) {
        if x == 0.0 {
            return;
        }
        let parts = self.slow.get_or_insert_with(Box::default);
        let mut x = x;
        let mut kept = 0;
        for j in 0..parts.len() {
            let mut y = parts[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                parts[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        parts.truncate(kept);
        if !x.is_finite() {
            // The exact sum left the f64 range: it rounds to an infinity of its sign.
            self.special += x;
        } else if x != 0.0 {
            parts.push(x);
        }
    }

    /// The finite part as non-overlapping `f64` partials, smallest first, whose exact sum it
    /// is: what an archive stores.
    pub(crate) fn float_parts(&self) -> Vec<f64> {
        let mut all = ExactSum {
            slow: self.slow.clone(),
            ..ExactSum::default()
        };
        for piece in pieces(self.fixed) {
            all.add_slow(piece);
        }
        all.slow.map_or_else(Vec::new, |p| *p)
    }

    /// The sum split into a counter's two parts: whole units when the sum is non-negative
    /// and they fit a `u64`, and the rest as [`ExactSum::float_parts`] would give it.
    pub(crate) fn split_int(&self) -> (u64, Vec<f64>) {
        if self.slow.is_none() && self.fixed >= 0 {
            let whole = (self.fixed >> FRAC_BITS) as u64;
            let fraction = ExactSum {
                fixed: self.fixed & ((1 << FRAC_BITS) - 1),
                ..ExactSum::default()
            };
            return (whole, fraction.float_parts());
        }
        (0, self.float_parts())
    }

    /// Non-finite values added (or an overflow): the sum is this value.
    pub(crate) fn special(&self) -> Option<f64> {
        (self.special != 0.0 || self.special.is_nan()).then_some(self.special)
    }

    /// The sum, rounded once to the nearest `f64` (ties to even).
    pub fn value(&self) -> f64 {
        if let Some(special) = self.special() {
            return special;
        }
        match &self.slow {
            // Integer to float conversion rounds to nearest, ties to even; scaling by a power
            // of two is exact (a non-zero accumulator is at least 2^-64, a normal number).
            None => self.fixed as f64 * UNIT,
            Some(_) => round(&self.float_parts()),
        }
    }
}

/// An `i128` count of 2^-64 units as exact `f64` pieces (32 bits each), largest first.
fn pieces(units: i128) -> impl Iterator<Item = f64> {
    let magnitude = units.unsigned_abs();
    let sign = if units < 0 { -1.0 } else { 1.0 };
    (0..4).rev().filter_map(move |k| {
        let chunk = ((magnitude >> (32 * k)) & 0xFFFF_FFFF) as u32;
        (chunk != 0).then(|| sign * f64::from(chunk) * 2f64.powi(32 * k - FRAC_BITS))
    })
}

/// Rounds the exact sum of non-overlapping partials (smallest first) to the nearest `f64`,
/// ties to even (the final step of Python's `math.fsum`).
pub(crate) fn round(p: &[f64]) -> f64 {
    let Some((&top, rest)) = p.split_last() else {
        return 0.0;
    };
    let mut hi = top;
    let mut lo = 0.0;
    let mut n = rest.len();
    // Add partials from the top while the sum stays exact.
    while n > 0 {
        let x = hi;
        n -= 1;
        let y = p[n];
        hi = x + y;
        let yr = hi - x;
        lo = y - yr;
        if lo != 0.0 {
            break;
        }
    }
    // `hi + lo` is exact; if `lo` is exactly half an ulp and the partials below push the
    // same way, the tie is not a tie: round away from `hi`.
    if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
        let y = lo * 2.0;
        let x = hi + y;
        let yr = x - hi;
        if y == yr {
            hi = x;
        }
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python's `math.fsum`: partials only, then the same final rounding.
    fn fsum(values: &[f64]) -> f64 {
        let mut s = ExactSum::default();
        for &v in values {
            if v.is_finite() {
                s.add_slow(v);
            } else {
                s.special += v;
            }
        }
        match s.special() {
            Some(v) => v,
            None => round(s.slow.as_deref().map_or(&[][..], |p| &p[..])),
        }
    }

    use proptest::prelude::*;

    proptest::proptest! {
        /// The fixed-point fast path and the partials agree bitwise with fsum's partials
        /// alone, whatever the magnitudes and signs.
        #[test]
        fn fast_and_slow_paths_agree_with_fsum(
            values in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::num::f64::NORMAL,
                    proptest::num::f64::NORMAL.prop_map(|v| (v % 1e6).abs()),
                    (0u32..1000).prop_map(|n| f64::from(n) / 8.0),
                    (0u32..1000).prop_map(|n| f64::from(n) * 0.1),
                    proptest::num::f64::NORMAL.prop_map(|v| v * 1e-300),
                ],
                0..40,
            ),
            ints in proptest::collection::vec(proptest::num::u64::ANY, 0..3),
        ) {
            let mut s = ExactSum::default();
            for &v in &values {
                s.add(v);
            }
            let mut all = values.clone();
            for &n in &ints {
                s.add_int(n);
                all.push((n >> 32) as f64 * 4_294_967_296.0);
                all.push((n & 0xFFFF_FFFF) as f64);
            }
            let expected = fsum(&all);
            prop_assert!(
                s.value() == expected || (s.value().is_nan() && expected.is_nan()),
                "{} != {}", s.value(), expected
            );
            // What an archive stores adds up to the same exact sum.
            let mut again = ExactSum::default();
            for p in s.float_parts() {
                again.add(p);
            }
            if s.special().is_none() {
                prop_assert_eq!(again.value(), s.value());
            }
        }

        /// Two sums joined with `absorb` equal the sum of all their values, wherever the
        /// values are split: folds of groups of processes join exactly.
        #[test]
        fn absorbed_sums_equal_one_sum(
            values in proptest::collection::vec(
                // Below 1e300, so that no grouping's partial sum leaves the f64 range.
                proptest::prop_oneof![
                    proptest::num::f64::NORMAL.prop_map(|v| v % 1e300),
                    (0u32..1000).prop_map(|n| f64::from(n) * 0.1),
                    proptest::num::f64::NORMAL.prop_map(|v| v * 1e-300),
                    Just(f64::INFINITY),
                    Just(f64::NAN),
                ],
                0..40,
            ),
            ints in proptest::collection::vec(proptest::num::u64::ANY, 0..6),
            split in 0usize..46,
        ) {
            let mut one = ExactSum::default();
            let (mut first, mut second) = (ExactSum::default(), ExactSum::default());
            for (i, &v) in values.iter().enumerate() {
                one.add(v);
                if i < split { first.add(v) } else { second.add(v) }
            }
            for (i, &n) in ints.iter().enumerate() {
                one.add_int(n);
                if values.len() + i < split { first.add_int(n) } else { second.add_int(n) }
            }
            first.absorb(second);
            let (got, want) = (first.value(), one.value());
            prop_assert!(got == want || (got.is_nan() && want.is_nan()), "{} != {}", got, want);
        }
    }

    fn sum(values: &[f64]) -> f64 {
        let mut s = ExactSum::default();
        for &v in values {
            s.add(v);
        }
        s.value()
    }

    #[test]
    fn the_issue_example_is_order_independent() {
        // Plain f64 sums depend on the order; the exact sum, rounded once, does not (and
        // agrees with Python's math.fsum).
        assert_eq!(0.1 + 0.1 + 0.4, 0.6000000000000001);
        assert_eq!(0.4 + 0.1 + 0.1, 0.6);
        assert_eq!(sum(&[0.1, 0.1, 0.4]), 0.6000000000000001);
        assert_eq!(sum(&[0.4, 0.1, 0.1]), 0.6000000000000001);
        // Folding a partial sum's partials into another is exact too (an archive's).
        let mut a = ExactSum::default();
        a.add(0.1);
        a.add(0.1);
        let mut b = ExactSum::default();
        b.add(0.4);
        a.float_parts().iter().for_each(|&p| b.add(p));
        assert_eq!(b.value(), 0.6000000000000001);
    }

    #[test]
    fn rounds_once_with_ties_to_even() {
        // 1 + 2^-53 is a tie between 1 and 1 + 2^-52: even wins (1); a tiny extra pushes it up.
        let half_ulp = 2f64.powi(-53);
        assert_eq!(sum(&[1.0, half_ulp]), 1.0);
        assert_eq!(sum(&[1.0, half_ulp, 1e-300]), 1.0 + 2f64.powi(-52));
        assert_eq!(sum(&[1e100, 1.0, -1e100]), 1.0);
        assert_eq!(sum(&[]), 0.0);
    }

    #[test]
    fn integers_join_exactly() {
        let mut s = ExactSum::default();
        s.add_int(u64::MAX);
        s.add_int(1);
        s.add(0.5);
        assert_eq!(s.value(), 2f64.powi(64));
        let mut t = ExactSum::default();
        t.add_int((1 << 53) + 1);
        assert_eq!(t.value(), 2f64.powi(53), "rounded once, to even");
        t.add(1.0);
        assert_eq!(t.value(), 2f64.powi(53) + 2.0);
        assert_eq!(t.float_parts().iter().sum::<f64>(), 2f64.powi(53) + 2.0);
        t.add(0.25);
        assert_eq!(t.split_int(), ((1 << 53) + 2, vec![0.25]));
        let mut huge = ExactSum::default();
        huge.add_int(u64::MAX);
        huge.add_int(u64::MAX);
        assert_eq!(huge.value(), 2f64.powi(65));
    }

    #[test]
    fn specials_and_overflow() {
        assert!(sum(&[1.0, f64::NAN]).is_nan());
        assert!(sum(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        assert_eq!(sum(&[f64::INFINITY, 1.0]), f64::INFINITY);
        assert_eq!(sum(&[f64::MAX, f64::MAX]), f64::INFINITY);
    }

    /// The inlined fixed-point path at the ends of its range (2^-12 and just below 2^51),
    /// either sign, and past the accumulator's capacity (thousands of the largest values
    /// overflow it into the partials): the same sums as fsum's partials alone.
    #[test]
    fn the_fixed_point_path_is_exact_at_its_edges() {
        let low = 2f64.powi(-12);
        let high = 2f64.powi(51);
        let edges = [
            low,
            low.next_up(),
            low.next_down(),
            high.next_down(),
            high,
            1.0 + f64::EPSILON,
            0.1,
        ];
        for &v in &edges {
            for values in [vec![v, -v, v], vec![-v; 3], vec![v; 9_000]] {
                let mut s = ExactSum::default();
                values.iter().for_each(|&x| s.add(x));
                assert_eq!(s.value(), fsum(&values), "{} x {v}", values.len());
            }
        }
        // An accumulator full of positive units, then negative ones: exact both ways.
        let mut values = vec![high.next_down(); 5_000];
        values.extend(vec![-0.75; 3]);
        values.extend(vec![-high.next_down(); 4_999]);
        let mut s = ExactSum::default();
        values.iter().for_each(|&x| s.add(x));
        assert_eq!(s.value(), fsum(&values));
        assert_eq!(s.value(), high.next_down() - 2.25);
    }

    #[test]
    fn many_magnitudes_spill_and_stay_exact() {
        let values: Vec<f64> = (0..40).map(|i| 2f64.powi(i * 40 - 800)).collect();
        let mut s = ExactSum::default();
        for &v in &values {
            s.add(v);
        }
        assert!(s.float_parts().len() > 4);
        // Removing each value again (exactly) leaves exactly the rest.
        for &v in &values[1..] {
            s.add(-v);
        }
        assert_eq!(s.value(), values[0]);
    }
}
