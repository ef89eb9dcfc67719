//! The applicant's uploads as files: what a file is (read from its bytes, never from what the
//! portal declared), and the application's materials reconciled with the files a store holds —
//! a declared material whose file is missing is missing, and where a declaration disagrees with
//! its file the file wins and the disagreement is named. Eligibility then applies the photo guide
//! to the files' facts (`materials_incomplete`, `photo_nonconforming`).
//!
//! Files are named by the SHA-256 the application gives them (content-addressed): a file whose
//! bytes do not hash to its name is not that material.

use crate::application::{Material, Materials};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The four materials, by their names in the contract.
pub const NAMES: [&str; 4] = ["photo", "signature", "id_card_front", "id_card_back"];

/// What a file is, read from its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FileFacts {
    /// `image/jpeg` or `image/png` by the file's magic bytes; `None` for anything else.
    pub content_type: Option<&'static str>,
    pub bytes: u64,
    /// From the JPEG frame header or the PNG header; 0 when the file has none.
    pub width_px: u32,
    pub height_px: u32,
}

/// Where the head must lie on a document photo, as fractions of the photo's width and height:
/// the photo guide's printed photo is 33 × 48 mm with the head 21–24 mm wide, 28–33 mm from crown
/// to chin, and the crown 3–5 mm below the top edge. The reviewer console draws these marks over
/// the photo; a reviewer judges the head against them (no file check can).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct HeadGuide {
    pub head_width: (f64, f64),
    pub head_height: (f64, f64),
    pub crown_from_top: (f64, f64),
}

/// The photo guide's head marks.
pub const HEAD_GUIDE: HeadGuide = HeadGuide {
    head_width: (21.0 / 33.0, 24.0 / 33.0),
    head_height: (28.0 / 48.0, 33.0 / 48.0),
    crown_from_top: (3.0 / 48.0, 5.0 / 48.0),
};

/// The lowercase hex SHA-256 of `bytes`: a material's name.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads what `bytes` are: a JPEG by its SOI marker and the dimensions of its first frame
/// header (SOF0–SOF15 but DHT, JPG and DAC), a PNG by its signature and IHDR; anything else has
/// no content type. A JPEG whose markers end before a frame header has no dimensions.
pub fn inspect(bytes: &[u8]) -> FileFacts {
    let size = bytes.len() as u64;
    let (content_type, dims) = if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        (Some("image/jpeg"), jpeg_dimensions(bytes))
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        (Some("image/png"), png_dimensions(bytes))
    } else {
        (None, None)
    };
    let (width_px, height_px) = dims.unwrap_or((0, 0));
    FileFacts {
        content_type,
        bytes: size,
        width_px,
        height_px,
    }
}

fn jpeg_dimensions(b: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2; // after SOI
    loop {
        // Markers may be padded with any number of 0xFF bytes.
        while *b.get(i)? == 0xFF && *b.get(i + 1)? == 0xFF {
            i += 1;
        }
        if *b.get(i)? != 0xFF {
            return None;
        }
        let marker = *b.get(i + 1)?;
        i += 2;
        match marker {
            // standalone markers: no length
            0x01 | 0xD0..=0xD7 => continue,
            0xD9 | 0xDA => return None, // end of image, or scan data before any frame header
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]));
        if len < 2 {
            return None;
        }
        let is_frame = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_frame {
            // length(2) precision(1) height(2) width(2)
            let h = u16::from_be_bytes([*b.get(i + 3)?, *b.get(i + 4)?]);
            let w = u16::from_be_bytes([*b.get(i + 5)?, *b.get(i + 6)?]);
            return Some((u32::from(w), u32::from(h)));
        }
        i += len;
    }
}

fn png_dimensions(b: &[u8]) -> Option<(u32, u32)> {
    // signature(8) length(4) "IHDR"(4) width(4) height(4)
    if b.get(12..16)? != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(b.get(16..20)?.try_into().ok()?);
    let h = u32::from_be_bytes(b.get(20..24)?.try_into().ok()?);
    Some((w, h))
}

/// Where a declaration and its file disagree (no personal data: names, hashes and numbers).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Discrepancy {
    pub material: &'static str,
    /// `file` (declared, but no file by that name), or the field that disagrees.
    pub field: &'static str,
    pub declared: Value,
    pub found: Value,
}

/// The materials as the files are: each declared material whose file `found` (by its SHA-256)
/// takes the file's content type, size and dimensions; one with no file is dropped (so
/// eligibility finds the materials incomplete). Returns them with every disagreement.
pub fn reconcile(
    declared: &Materials,
    mut found: impl FnMut(&str) -> Option<FileFacts>,
) -> (Materials, Vec<Discrepancy>) {
    let mut discrepancies = Vec::new();
    let mut one = |name: &'static str, m: &Option<Material>| -> Option<Material> {
        let m = m.as_ref()?;
        let Some(facts) = found(&m.sha256) else {
            discrepancies.push(Discrepancy {
                material: name,
                field: "file",
                declared: json!(m.sha256),
                found: Value::Null,
            });
            return None;
        };
        let content_type = facts.content_type.unwrap_or("application/octet-stream");
        let mut differs = |field, declared: Value, found: Value| {
            if declared != found {
                discrepancies.push(Discrepancy {
                    material: name,
                    field,
                    declared,
                    found,
                });
            }
        };
        differs(
            "content_type",
            json!(m.content_type.to_ascii_lowercase()),
            json!(content_type),
        );
        differs("bytes", json!(m.bytes), json!(facts.bytes));
        differs("width_px", json!(m.width_px), json!(facts.width_px));
        differs("height_px", json!(m.height_px), json!(facts.height_px));
        Some(Material {
            sha256: m.sha256.clone(),
            content_type: content_type.to_owned(),
            bytes: facts.bytes,
            width_px: facts.width_px,
            height_px: facts.height_px,
        })
    };
    let materials = Materials {
        photo: one("photo", &declared.photo),
        signature: one("signature", &declared.signature),
        id_card_front: one("id_card_front", &declared.id_card_front),
        id_card_back: one("id_card_back", &declared.id_card_back),
    };
    (materials, discrepancies)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG's first bytes: SOI, an APP0 segment, then a baseline frame header of `w`×`h`.
    fn jpeg_head(w: u16, h: u16, frame_marker: u8) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8];
        b.extend([0xFF, 0xE0, 0x00, 0x10]);
        b.extend(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        b.extend([0xFF, 0xFF]); // fill byte before the next marker
        b.extend([0xFF, frame_marker, 0x00, 0x11, 0x08]);
        b.extend(h.to_be_bytes());
        b.extend(w.to_be_bytes());
        b.extend([0x03, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        b.extend([0xFF, 0xD9]);
        b
    }

    #[test]
    fn files_are_what_their_bytes_say() {
        let rows: Vec<(Vec<u8>, Option<&str>, u32, u32)> = vec![
            (jpeg_head(360, 480, 0xC0), Some("image/jpeg"), 360, 480),
            (jpeg_head(354, 472, 0xC2), Some("image/jpeg"), 354, 472), // progressive
            // a Huffman table segment (C4) is not a frame header: skipped
            (
                {
                    let mut b = vec![0xFF, 0xD8, 0xFF, 0xC4, 0x00, 0x04, 0, 0];
                    b.extend(&jpeg_head(600, 300, 0xC1)[2..]);
                    b
                },
                Some("image/jpeg"),
                600,
                300,
            ),
            // scan data before any frame header: a JPEG without dimensions
            (
                vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02],
                Some("image/jpeg"),
                0,
                0,
            ),
            (vec![0xFF, 0xD8, 0xFF], Some("image/jpeg"), 0, 0), // truncated
            (
                {
                    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
                    b.extend(360u32.to_be_bytes());
                    b.extend(480u32.to_be_bytes());
                    b
                },
                Some("image/png"),
                360,
                480,
            ),
            (b"GIF89a".to_vec(), None, 0, 0),
            (vec![], None, 0, 0),
        ];
        for (bytes, content_type, w, h) in rows {
            let facts = inspect(&bytes);
            assert_eq!(
                (facts.content_type, facts.width_px, facts.height_px),
                (content_type, w, h),
                "{bytes:02x?}"
            );
            assert_eq!(facts.bytes, bytes.len() as u64);
        }
    }

    fn material(sha: &str, w: u32, h: u32, bytes: u64) -> Material {
        Material {
            sha256: sha.into(),
            content_type: "image/jpeg".into(),
            bytes,
            width_px: w,
            height_px: h,
        }
    }

    #[test]
    fn the_file_wins_and_every_disagreement_is_named() {
        let declared = Materials {
            photo: Some(material("aa", 360, 480, 40_000)),
            signature: Some(material("bb", 600, 300, 30_000)),
            id_card_front: Some(material("cc", 1200, 760, 200_000)),
            id_card_back: None,
        };
        let files = |sha: &str| match sha {
            "aa" => Some(FileFacts {
                content_type: Some("image/png"),
                bytes: 41_000,
                width_px: 360,
                height_px: 480,
            }),
            "bb" => Some(FileFacts {
                content_type: Some("image/jpeg"),
                bytes: 30_000,
                width_px: 600,
                height_px: 300,
            }),
            _ => None,
        };
        let (found, discrepancies) = reconcile(&declared, files);
        let photo = found.photo.expect("the photo's file is there");
        assert_eq!(
            (photo.content_type.as_str(), photo.bytes),
            ("image/png", 41_000)
        );
        assert_eq!(found.signature, declared.signature, "agrees: unchanged");
        assert_eq!(found.id_card_front, None, "declared, no file: missing");
        assert_eq!(found.id_card_back, None);
        let named: Vec<(&str, &str)> = discrepancies
            .iter()
            .map(|d| (d.material, d.field))
            .collect();
        assert_eq!(
            named,
            [
                ("photo", "content_type"),
                ("photo", "bytes"),
                ("id_card_front", "file")
            ]
        );
    }

    #[test]
    fn names_are_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
