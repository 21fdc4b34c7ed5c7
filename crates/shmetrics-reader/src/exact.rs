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

/// Partials kept inline; more (values of very different magnitudes) spill to the heap.
const INLINE: usize = 4;

/// An exact sum of `f64` and integer values. See the module docs.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ExactSum {
    /// Integer values (counters' integer words), exactly.
    int: i128,
    /// Non-overlapping finite partials in increasing magnitude; their exact sum plus `int`
    /// is the finite part of the sum.
    parts: Parts,
    /// Sum of the non-finite values and of overflowed partials; `0.0` when there is none.
    special: f64,
}

/// A small vector of `f64` partials.
#[derive(Clone, Debug, Default, PartialEq)]
struct Parts {
    len: u8,
    inline: [f64; INLINE],
    spill: Vec<f64>,
}

impl Parts {
    fn as_slice(&self) -> &[f64] {
        if self.spill.is_empty() {
            &self.inline[..self.len as usize]
        } else {
            &self.spill
        }
    }

    fn get(&self, i: usize) -> f64 {
        self.as_slice()[i]
    }

    fn len(&self) -> usize {
        if self.spill.is_empty() {
            self.len as usize
        } else {
            self.spill.len()
        }
    }

    fn set(&mut self, i: usize, v: f64) {
        if self.spill.is_empty() {
            self.inline[i] = v;
        } else {
            self.spill[i] = v;
        }
    }

    /// Keeps the first `n` partials and appends `v`.
    fn truncate_push(&mut self, n: usize, v: f64) {
        if self.spill.is_empty() && n < INLINE {
            self.inline[n] = v;
            self.len = (n + 1) as u8;
            return;
        }
        if self.spill.is_empty() {
            self.spill.extend_from_slice(&self.inline[..n]);
        } else {
            self.spill.truncate(n);
        }
        self.spill.push(v);
    }

    fn truncate(&mut self, n: usize) {
        if self.spill.is_empty() {
            self.len = n as u8;
        } else {
            self.spill.truncate(n);
            if n <= INLINE {
                self.inline[..n].copy_from_slice(&self.spill);
                self.len = n as u8;
                self.spill = Vec::new();
            }
        }
    }
}

impl ExactSum {
    /// Adds an integer exactly.
    #[inline]
    pub(crate) fn add_int(&mut self, n: u64) {
        // 2^127 / 2^64: no overflow before 2^63 additions of the largest word.
        self.int = self.int.saturating_add(i128::from(n));
    }

    /// Adds `x` exactly.
    #[inline]
    pub(crate) fn add(&mut self, x: f64) {
        if x == 0.0 {
            return;
        }
        if !x.is_finite() {
            self.special += x;
            return;
        }
        // Shewchuk's grow-expansion: each step splits x + p into the rounded sum and its
        // exact error; non-zero errors stay as partials, smallest first.
        let mut x = x;
        let mut kept = 0;
        for j in 0..self.parts.len() {
            let mut y = self.parts.get(j);
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.parts.set(kept, lo);
                kept += 1;
            }
            x = hi;
        }
        if !x.is_finite() {
            // The exact sum left the f64 range: it rounds to an infinity of its sign.
            self.special += x;
            self.parts.truncate(kept);
        } else if x != 0.0 {
            self.parts.truncate_push(kept, x);
        } else {
            self.parts.truncate(kept);
        }
    }

    /// The finite part as non-overlapping `f64` partials, smallest first, whose exact sum it
    /// is (the integer part folded in): what an archive stores.
    pub(crate) fn float_parts(&self) -> Vec<f64> {
        self.with_int_folded().parts.as_slice().to_vec()
    }

    /// The integer part, when it fits a `u64` word.
    pub(crate) fn int_word(&self) -> Option<u64> {
        u64::try_from(self.int).ok()
    }

    /// The partials alone, without the integer part (see [`ExactSum::int_word`]).
    pub(crate) fn fraction_parts(&self) -> &[f64] {
        self.parts.as_slice()
    }

    /// Non-finite values added (or an overflow): the sum is this value.
    pub(crate) fn special(&self) -> Option<f64> {
        (self.special != 0.0 || self.special.is_nan()).then_some(self.special)
    }

    /// A copy with the integer part moved into the partials.
    fn with_int_folded(&self) -> ExactSum {
        let mut s = self.clone();
        if s.int != 0 {
            let int = std::mem::take(&mut s.int);
            // 32-bit pieces convert to f64 exactly.
            let magnitude = int.unsigned_abs();
            let sign = if int < 0 { -1.0 } else { 1.0 };
            for shift in (0..128).step_by(32) {
                let piece = ((magnitude >> shift) & 0xFFFF_FFFF) as u32;
                if piece != 0 {
                    s.add(sign * f64::from(piece) * 2f64.powi(shift));
                }
            }
        }
        s
    }

    /// The sum, rounded once to the nearest `f64` (ties to even).
    pub(crate) fn value(&self) -> f64 {
        if let Some(special) = self.special() {
            return special;
        }
        if self.int == 0 {
            return round(self.parts.as_slice());
        }
        if self.parts.len() == 0 && self.int.unsigned_abs() <= 1 << 53 {
            return self.int as f64;
        }
        let folded = self.with_int_folded();
        match folded.special() {
            Some(special) => special,
            None => round(folded.parts.as_slice()),
        }
    }
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
    }

    #[test]
    fn specials_and_overflow() {
        assert!(sum(&[1.0, f64::NAN]).is_nan());
        assert!(sum(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        assert_eq!(sum(&[f64::INFINITY, 1.0]), f64::INFINITY);
        assert_eq!(sum(&[f64::MAX, f64::MAX]), f64::INFINITY);
    }

    #[test]
    fn many_magnitudes_spill_and_stay_exact() {
        let values: Vec<f64> = (0..40).map(|i| 2f64.powi(i * 40 - 800)).collect();
        let mut s = ExactSum::default();
        for &v in &values {
            s.add(v);
        }
        assert!(s.fraction_parts().len() > INLINE);
        // Removing each value again (exactly) leaves exactly the rest.
        for &v in &values[1..] {
            s.add(-v);
        }
        assert_eq!(s.value(), values[0]);
    }
}
