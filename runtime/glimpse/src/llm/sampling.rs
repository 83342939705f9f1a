//! Choosing the next token from the decoder's logits: greedy, or seeded sampling with
//! temperature, top-k and top-p.

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0: greedy (the most likely token, deterministic). Above 0: logits are divided by it
    /// before sampling.
    pub temperature: f32,
    /// Sample among the `top_k` most likely tokens only (0: no limit).
    pub top_k: usize,
    /// Sample among the most likely tokens whose probabilities add up to `top_p` (1: all).
    pub top_p: f32,
    /// Seed of the random choices: the same seed, prompt and model give the same text.
    pub seed: u64,
}

impl Sampling {
    /// The most likely token at every step.
    pub const GREEDY: Sampling = Sampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    };

    /// Seeded sampling with the given temperature, top-k 40 and top-p 0.95.
    pub fn random(temperature: f32, seed: u64) -> Self {
        Sampling {
            temperature,
            top_k: 40,
            top_p: 0.95,
            seed,
        }
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "temperature {} is not a finite number ≥ 0",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p {} is outside (0, 1]", self.top_p));
        }
        Ok(())
    }
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling::GREEDY
    }
}

/// A [`Sampling`] with its random state.
pub(crate) struct Sampler {
    sampling: Sampling,
    rng: SplitMix64,
}

impl Sampler {
    pub fn new(sampling: Sampling) -> Self {
        Sampler {
            sampling,
            rng: SplitMix64(sampling.seed),
        }
    }

    /// The next token. NaN logits never win.
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        let s = self.sampling;
        if s.temperature == 0.0 || s.top_k == 1 {
            return argmax(logits);
        }
        let mut order: Vec<u32> = (0..logits.len() as u32)
            .filter(|&i| !logits[i as usize].is_nan())
            .collect();
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
        if s.top_k > 0 && s.top_k < order.len() {
            order.select_nth_unstable_by(s.top_k - 1, by_logit);
            order.truncate(s.top_k);
        }
        order.sort_unstable_by(by_logit);
        let Some(&best) = order.first() else {
            return 0;
        };
        let top = logits[best as usize];
        let mut probs: Vec<f32> = order
            .iter()
            .map(|&i| ((logits[i as usize] - top) / s.temperature).exp())
            .collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        // Nucleus: the shortest head of the sorted list reaching top_p.
        let mut mass = 0.0;
        let keep = probs
            .iter()
            .position(|p| {
                mass += p;
                mass >= s.top_p
            })
            .map_or(probs.len(), |i| i + 1);
        let mass: f32 = probs[..keep].iter().sum();
        let mut draw = self.rng.f32() * mass;
        for (&token, &p) in order.iter().zip(&probs[..keep]) {
            draw -= p;
            if draw < 0.0 {
                return token;
            }
        }
        order[keep - 1]
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a seeded stream of uniform numbers, all sampling
/// needs. Six lines, so written here rather than adding a crate to the shipped library
/// (whose size budget is re-measured on every manifest change, see `.ci/size`).
struct SplitMix64(u64);

impl SplitMix64 {
    /// Uniform in [0, 1), 24 random bits.
    fn f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Index of the largest value (the first of equals); NaN never wins.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest_and_skips_nan() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -5.0, -4.0]), 2);
        let mut s = Sampler::new(Sampling::GREEDY);
        assert_eq!(s.pick(&[0.0, 1.0, 9.0, 2.0]), 2);
    }

    #[test]
    fn top_k_and_top_p_bound_the_choices() {
        let logits = [0.0, 5.0, 4.9, 4.8, -3.0, 1.0];
        let mut k2 = Sampler::new(Sampling {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
            seed: 7,
        });
        let mut p_small = Sampler::new(Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.3,
            seed: 7,
        });
        let mut seen = [0usize; 6];
        for _ in 0..2000 {
            seen[k2.pick(&logits) as usize] += 1;
            // The most likely token alone holds more than 30%: nucleus of one.
            assert_eq!(p_small.pick(&logits), 1);
        }
        assert_eq!(seen[0] + seen[3] + seen[4] + seen[5], 0, "{seen:?}");
        // exp(5) : exp(4.9) is 52.5 : 47.5.
        let share = seen[1] as f64 / 2000.0;
        assert!((0.47..0.58).contains(&share), "{seen:?}");
    }

    #[test]
    fn a_seed_repeats_its_choices_and_temperature_flattens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let run = |seed, temperature| {
            let mut s = Sampler::new(Sampling {
                temperature,
                top_k: 0,
                top_p: 1.0,
                seed,
            });
            (0..200).map(|_| s.pick(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(3, 1.0), run(3, 1.0));
        assert_ne!(run(3, 1.0), run(4, 1.0));
        let distinct = |v: Vec<u32>| {
            let mut v = v;
            v.sort();
            v.dedup();
            v.len()
        };
        assert!(distinct(run(3, 0.05)) < distinct(run(3, 5.0)));
    }
}
