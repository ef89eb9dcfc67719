//! Real JPEGs for the demo, the bench and the tests: the materials an applicant uploads (a photo
//! of the guide's size, a signature, both sides of the identity card), made in memory.

/// A real baseline JPEG of `width`×`height` at `quality`: a gradient with deterministic noise
/// (seeded by `seed`), so that its size grows with its area and its quality like a photo's.
pub fn jpeg(width: u16, height: u16, quality: u8, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut pixels = Vec::with_capacity(usize::from(width) * usize::from(height) * 3);
    for y in 0..height {
        for x in 0..width {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = (state >> 58) as u8; // 0..63
            let base = ((u32::from(x) + u32::from(y)) % 192) as u8;
            pixels.extend([base + noise, base / 2 + noise, 200 - base / 2]);
        }
    }
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(&pixels, width, height, jpeg_encoder::ColorType::Rgb)
        .expect("encoding RGB pixels of a valid size into memory does not fail");
    out
}

/// A JPEG of `width`×`height` whose size lies within `min..=max` bytes (the photo guide's 20–80
/// KiB): the highest quality that fits (quality 50 when none does; callers check the size).
pub fn jpeg_sized(width: u16, height: u16, min: usize, max: usize, seed: u64) -> Vec<u8> {
    (10..=95)
        .rev()
        .step_by(5)
        .map(|q| jpeg(width, height, q, seed))
        .find(|j| (min..=max).contains(&j.len()))
        .unwrap_or_else(|| {
            panic!("no quality makes {width}x{height} between {min} and {max} bytes")
        })
}
