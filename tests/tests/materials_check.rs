//! `wangban check --materials DIR`: the photo guide applied to the files themselves (real JPEGs,
//! named by their SHA-256 as the local materials store keeps them), not to the declarations.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use wangban_domain::materials::sha256_hex;
use wangban_tests::{jpeg, jpeg_sized, wangban_binary, workspace_root};

/// Stores `bytes` in `dir` under their SHA-256 and returns the name.
fn put(dir: &Path, bytes: &[u8]) -> String {
    let name = sha256_hex(bytes);
    std::fs::write(dir.join(&name), bytes).unwrap();
    name
}

fn declared(sha: &str, bytes: usize, w: u32, h: u32) -> Value {
    json!({"sha256": sha, "content_type": "image/jpeg", "bytes": bytes, "width_px": w, "height_px": h})
}

/// Runs `wangban check [--materials dir] app…` and returns its lines.
fn check(materials: Option<&Path>, apps: &[PathBuf]) -> Vec<Value> {
    let mut cmd = Command::new(wangban_binary());
    cmd.arg("check");
    if let Some(dir) = materials {
        cmd.arg("--materials").arg(dir);
    }
    let out = cmd.args(apps).output().expect("wangban runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn discrepancies(line: &Value) -> Vec<(String, String)> {
    line["materials"]["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["material"].as_str().unwrap().to_owned(),
                d["field"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_photo_guide_is_applied_to_the_files_not_the_declarations() {
    let dir = std::env::temp_dir().join(format!(
        "wangban-materials-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let photo = jpeg_sized(360, 480, 20 * 1024, 80 * 1024, 1);
    let square = jpeg_sized(400, 400, 20 * 1024, 80 * 1024, 2);
    let signature = jpeg(600, 300, 80, 3);
    let front = jpeg(1200, 760, 70, 4);
    let back = jpeg(1200, 760, 70, 5);
    let (p, sq, s, f, b) = (
        put(&store, &photo),
        put(&store, &square),
        put(&store, &signature),
        put(&store, &front),
        put(&store, &back),
    );
    // Bytes under a name they do not hash to: not that material.
    let forged = sha256_hex(b"the real file");
    std::fs::write(store.join(&forged), jpeg(1200, 760, 70, 6)).unwrap();
    let not_stored = sha256_hex(b"never uploaded");

    let base: Value = serde_json::from_str(
        &std::fs::read_to_string(
            workspace_root().join("examples/applications/accepted-passport-courier.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let good = json!({
        "photo": declared(&p, photo.len(), 360, 480),
        "signature": declared(&s, signature.len(), 600, 300),
        "id_card_front": declared(&f, front.len(), 1200, 760),
        "id_card_back": declared(&b, back.len(), 1200, 760),
    });
    let variants: Vec<(&str, Value)> = vec![
        ("good", good.clone()),
        // declared as a conforming 360×480 photo; the file is 400×400
        ("square", {
            let mut m = good.clone();
            m["photo"] = declared(&sq, square.len(), 360, 480);
            m
        }),
        // declared, never stored
        ("missing", {
            let mut m = good.clone();
            m["id_card_back"] = declared(&not_stored, 200_000, 1200, 760);
            m
        }),
        // stored, but its bytes are another file's
        ("forged", {
            let mut m = good.clone();
            m["id_card_front"] = declared(&forged, 200_000, 1200, 760);
            m
        }),
        // declared 50 KiB, 360×480: the file is smaller than it says (the file's size counts)
        ("understated", {
            let mut m = good.clone();
            m["photo"]["bytes"] = json!(photo.len() + 1);
            m
        }),
    ];
    let mut files = Vec::new();
    for (name, materials) in &variants {
        let mut app = base.clone();
        app["application_id"] = json!(format!("MAT-{name}"));
        app["materials"] = materials.clone();
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, app.to_string()).unwrap();
        files.push(path);
    }

    let lines = check(Some(&store), &files);
    let by_name = |n: &str| &lines[variants.iter().position(|(v, _)| *v == n).unwrap()];

    assert_eq!(
        by_name("good")["decision"],
        "accepted",
        "{}",
        by_name("good")
    );
    assert!(discrepancies(by_name("good")).is_empty());

    let square = by_name("square");
    assert_eq!(
        square["reasons"],
        json!(["photo_nonconforming"]),
        "{square}"
    );
    assert_eq!(
        discrepancies(square),
        [
            ("photo".into(), "width_px".into()),
            ("photo".into(), "height_px".into())
        ]
    );

    let missing = by_name("missing");
    assert_eq!(
        missing["reasons"],
        json!(["materials_incomplete"]),
        "{missing}"
    );
    assert_eq!(
        discrepancies(missing),
        [("id_card_back".into(), "file".into())]
    );

    let forged = by_name("forged");
    assert_eq!(
        forged["reasons"],
        json!(["materials_incomplete"]),
        "{forged}"
    );
    assert!(
        forged["errors"][0].as_str().unwrap().contains("integrity"),
        "{forged}"
    );

    let understated = by_name("understated");
    assert_eq!(
        understated["decision"], "accepted",
        "the file's size is in the guide"
    );
    assert_eq!(
        discrepancies(understated),
        [("photo".into(), "bytes".into())]
    );

    // Without --materials the declarations are checked, as before: the square photo's
    // declaration conforms, the never-stored card is declared.
    let lines = check(None, &files);
    assert!(
        lines
            .iter()
            .all(|l| l["decision"] == "accepted" && l.get("materials").is_none()),
        "{lines:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
