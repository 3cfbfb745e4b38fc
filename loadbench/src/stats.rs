//! Percentiles of one run, and medians with min–max over runs.

/// The `q`-quantile (0..=1) of `sorted` by the nearest-rank method; 0 when empty.
pub(crate) fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median, min and max of several runs' values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Spread {
    /// `None` when there are no values.
    pub(crate) fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: values[0],
            max: values[n - 1],
        })
    }

    /// `median (min–max)` with `decimals` digits, or the median alone when all runs agree or
    /// there was one run.
    pub(crate) fn show(&self, decimals: usize) -> String {
        let median = group(self.median, decimals);
        let (min, max) = (group(self.min, decimals), group(self.max, decimals));
        if min == max {
            median
        } else {
            format!("{median} ({min}–{max})")
        }
    }
}

/// `value` with `decimals` digits and thousands separators.
pub(crate) fn group(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i.to_owned(), format!(".{f}")),
        None => (text.clone(), String::new()),
    };
    let (sign, digits) = match int.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", int.as_str()),
    };
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let sorted: Vec<u32> = (1..=1000).collect();
        assert_eq!(quantile(&sorted, 0.5), 500);
        assert_eq!(quantile(&sorted, 0.99), 990);
        assert_eq!(quantile(&sorted, 0.999), 999);
        assert_eq!(quantile(&sorted, 1.0), 1000);
        assert_eq!(quantile::<u32>(&[], 0.5), 0);
    }

    #[test]
    fn spreads_show_median_and_range() {
        let spread = Spread::of([3.0, 1.0, 2.0]);
        assert_eq!(spread.map(|s| s.show(0)), Some("2 (1–3)".to_owned()));
        assert_eq!(
            Spread::of([12345.6]).map(|s| s.show(1)),
            Some("12,345.6".to_owned())
        );
        assert_eq!(Spread::of([]), None);
    }
}
