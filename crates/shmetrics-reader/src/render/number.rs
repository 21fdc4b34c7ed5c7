//! Number formatting that round-trips exactly.

/// Appends `v` as exposition text: integers as `12.0`, other finite values in the shortest
/// form that parses back to the same `f64`, and `+Inf`, `-Inf`, `NaN`.
pub fn write_f64(v: f64, out: &mut Vec<u8>) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        if v == 0.0 && v.is_sign_negative() {
            out.extend_from_slice(b"-0.0");
            return;
        }
        out.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes());
        out.extend_from_slice(b".0");
    } else {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    }
}

/// Appends a bucket bound as an `le` label value (same rules as [`write_f64`]).
pub fn write_le(bound: f64, out: &mut Vec<u8>) {
    write_f64(bound, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(v: f64) -> String {
        let mut out = Vec::new();
        write_f64(v, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn known_values() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (-3.0, "-3.0"),
            (0.005, "0.005"),
            (2.5, "2.5"),
            (1e-7, "1e-7"),
            (123456789012345.0, "123456789012345.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e16"),
            (1e300, "1e300"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (v, expected) in cases {
            assert_eq!(fmt(v), expected, "{v:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn round_trips(bits in proptest::num::u64::ANY) {
            let v = f64::from_bits(bits);
            let text = fmt(v);
            let back: f64 = match text.as_str() {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                s => s.parse().unwrap(),
            };
            if v.is_nan() {
                proptest::prop_assert!(back.is_nan());
            } else {
                proptest::prop_assert_eq!(back.to_bits(), v.to_bits());
            }
        }
    }
}
