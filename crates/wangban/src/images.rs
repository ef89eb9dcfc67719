//! Real JPEGs for the demo, the bench and the tests: the materials an applicant uploads (a photo
//! of the guide's size, a signature, both sides of the identity card), made in memory. Each is a
//! simple drawing of what it stands for — a head and shoulders, a pen stroke, a card — over
//! deterministic noise (seeded), so that a file's size grows with its area and quality like a
//! photo's, and a reviewer (or a screenshot) can tell them apart.

/// What a picture shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Picture {
    /// A gradient: no subject.
    Gradient,
    /// A document photo: a head and shoulders centred on a light background, the head within
    /// the guide's marks.
    Portrait,
    /// A handwritten signature: a dark stroke on white.
    Signature,
    /// The identity card's portrait side.
    CardFront,
    /// The identity card's emblem side.
    CardBack,
}

impl Picture {
    /// The colour at (`x`, `y`), both in 0..1, before noise.
    fn paint(self, x: f32, y: f32) -> [f32; 3] {
        let inside = |cx: f32, cy: f32, rx: f32, ry: f32| {
            ((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2) <= 1.0
        };
        let bar =
            |x0: f32, x1: f32, y0: f32| (x0..x1).contains(&x) && (y0..y0 + 0.035).contains(&y);
        match self {
            Picture::Gradient => {
                let base = (x + y) * 96.0;
                [base, base / 2.0, 200.0 - base / 2.0]
            }
            Picture::Portrait => {
                if inside(0.5, 0.40, 0.33, 0.32) {
                    [226.0, 188.0, 160.0] // face: crown at 8 %, chin at 72 % of the height
                } else if inside(0.5, 1.08, 0.62, 0.36) {
                    [40.0, 52.0, 78.0] // shoulders
                } else {
                    [236.0, 238.0, 240.0]
                }
            }
            Picture::Signature => {
                let stroke = 0.5 + 0.18 * (x * 19.0).sin() * (x * 3.0).cos();
                if x > 0.08 && x < 0.92 && (y - stroke).abs() < 0.035 {
                    [20.0, 24.0, 60.0]
                } else {
                    [250.0, 250.0, 246.0]
                }
            }
            Picture::CardFront => {
                if inside(0.78, 0.45, 0.13, 0.22) {
                    [150.0, 150.0, 160.0]
                } else if bar(0.08, 0.55, 0.18)
                    || bar(0.08, 0.35, 0.30)
                    || bar(0.08, 0.62, 0.42)
                    || bar(0.08, 0.62, 0.54)
                    || bar(0.25, 0.9, 0.80)
                {
                    [60.0, 60.0, 70.0]
                } else {
                    [214.0, 230.0, 240.0 - 30.0 * y]
                }
            }
            Picture::CardBack => {
                if inside(0.17, 0.3, 0.1, 0.16) {
                    [200.0, 40.0, 40.0]
                } else if bar(0.35, 0.9, 0.22) || bar(0.3, 0.8, 0.72) || bar(0.3, 0.8, 0.82) {
                    [60.0, 60.0, 70.0]
                } else {
                    [220.0, 234.0, 236.0 - 30.0 * x]
                }
            }
        }
    }

    /// How much noise the picture carries (a photo's grain; a scan's less).
    fn grain(self) -> u8 {
        match self {
            Picture::Gradient | Picture::Portrait => 64,
            Picture::Signature | Picture::CardFront | Picture::CardBack => 16,
        }
    }
}

/// A real baseline JPEG of `width`×`height` at `quality` showing `picture`, its noise seeded by
/// `seed`.
pub fn picture(picture: Picture, width: u16, height: u16, quality: u8, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let grain = f32::from(picture.grain());
    let mut pixels = Vec::with_capacity(usize::from(width) * usize::from(height) * 3);
    for y in 0..height {
        for x in 0..width {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = (state >> 40) as f32 / (1u64 << 24) as f32 * grain - grain / 2.0;
            let colour = picture.paint(
                f32::from(x) / f32::from(width),
                f32::from(y) / f32::from(height),
            );
            pixels.extend(colour.map(|c| (c + noise).clamp(0.0, 255.0) as u8));
        }
    }
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(&pixels, width, height, jpeg_encoder::ColorType::Rgb)
        .expect("encoding RGB pixels of a valid size into memory does not fail");
    out
}

/// A gradient JPEG (no subject): [`picture`] of [`Picture::Gradient`].
pub fn jpeg(width: u16, height: u16, quality: u8, seed: u64) -> Vec<u8> {
    picture(Picture::Gradient, width, height, quality, seed)
}

/// A document photo of `width`×`height` whose size lies within `min..=max` bytes (the photo
/// guide's 20–80 KiB): the highest quality that fits.
pub fn portrait_sized(width: u16, height: u16, min: usize, max: usize, seed: u64) -> Vec<u8> {
    sized(Picture::Portrait, width, height, min, max, seed)
}

/// [`portrait_sized`] of a gradient.
pub fn jpeg_sized(width: u16, height: u16, min: usize, max: usize, seed: u64) -> Vec<u8> {
    sized(Picture::Gradient, width, height, min, max, seed)
}

fn sized(p: Picture, width: u16, height: u16, min: usize, max: usize, seed: u64) -> Vec<u8> {
    (10..=95)
        .rev()
        .step_by(5)
        .map(|q| picture(p, width, height, q, seed))
        .find(|j| (min..=max).contains(&j.len()))
        .unwrap_or_else(|| {
            panic!("no quality makes {width}x{height} between {min} and {max} bytes")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_picture_is_a_jpeg_of_its_size_and_the_photos_fit_the_guide() {
        for p in [
            Picture::Gradient,
            Picture::Portrait,
            Picture::Signature,
            Picture::CardFront,
            Picture::CardBack,
        ] {
            let facts = wangban_domain::materials::inspect(&picture(p, 120, 90, 80, 7));
            assert_eq!(
                (facts.content_type, facts.width_px, facts.height_px),
                (Some("image/jpeg"), 120, 90),
                "{p:?}"
            );
        }
        for (w, h) in [(354, 472), (360, 480), (480, 640)] {
            let n = portrait_sized(w, h, 20 * 1024, 80 * 1024, 1).len();
            assert!((20 * 1024..=80 * 1024).contains(&n), "{w}x{h}: {n} bytes");
        }
        assert_ne!(
            picture(Picture::Portrait, 60, 80, 80, 1),
            picture(Picture::Portrait, 60, 80, 80, 2)
        );
    }
}
