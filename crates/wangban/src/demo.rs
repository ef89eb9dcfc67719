//! `wangban demo`: generated applications of every kind through the whole pipeline with simulated
//! parties, checked against the final state each scenario must reach.

use crate::pipeline::{Pipeline, WORKERS};
use crate::settings::Settings;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use wangban_domain::id_number::check_character;

/// A scenario: what the applicant sends and where the case must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    PassportCourier,
    PermitPickup,
    TaiwanStolenCourier,
    VisaPagesFullPickup,
    Correction,
    ReviewRejected,
    Unpaid,
    Under16,
    NotPilotCity,
    Expired,
    FirstApplication,
    OutsideMainland,
    PhotoNonconforming,
    InvalidIdNumber,
    CounterOnly,
    DuplicateActive,
    SubmittedTwice,
    SmsNumberInvalid,
    CourierReturned,
    CorrectionLapsed,
    Uncollected,
    LateProduction,
    Malformed,
}

impl Scenario {
    pub const ALL: [Scenario; 23] = [
        Scenario::PassportCourier,
        Scenario::PermitPickup,
        Scenario::TaiwanStolenCourier,
        Scenario::VisaPagesFullPickup,
        Scenario::Correction,
        Scenario::ReviewRejected,
        Scenario::Unpaid,
        Scenario::Under16,
        Scenario::NotPilotCity,
        Scenario::Expired,
        Scenario::FirstApplication,
        Scenario::OutsideMainland,
        Scenario::PhotoNonconforming,
        Scenario::InvalidIdNumber,
        Scenario::CounterOnly,
        Scenario::DuplicateActive,
        Scenario::SubmittedTwice,
        Scenario::SmsNumberInvalid,
        Scenario::CourierReturned,
        Scenario::CorrectionLapsed,
        Scenario::Uncollected,
        Scenario::LateProduction,
        Scenario::Malformed,
    ];

    /// The state the case must end in (`refused`: no case, the message is a dead letter).
    pub fn expected(self) -> &'static str {
        use Scenario::*;
        match self {
            PassportCourier | TaiwanStolenCourier | Correction | SubmittedTwice
            | SmsNumberInvalid | LateProduction => "delivered",
            PermitPickup | VisaPagesFullPickup | CourierReturned => "collected",
            ReviewRejected => "review_rejected",
            Unpaid => "payment_expired",
            CorrectionLapsed => "correction_lapsed",
            Uncollected => "ready_for_pickup",
            Under16 | NotPilotCity | Expired | FirstApplication | OutsideMainland
            | PhotoNonconforming | InvalidIdNumber | CounterOnly | DuplicateActive => "rejected",
            Malformed => "refused",
        }
    }

    /// The scenario's name in reports (`wangban demo --json`).
    pub fn name(self) -> &'static str {
        use Scenario::*;
        match self {
            PassportCourier => "passport_courier",
            PermitPickup => "permit_pickup",
            TaiwanStolenCourier => "taiwan_stolen_courier",
            VisaPagesFullPickup => "visa_pages_full_pickup",
            Correction => "correction",
            ReviewRejected => "review_rejected",
            Unpaid => "unpaid",
            Under16 => "under_16",
            NotPilotCity => "not_pilot_city",
            Expired => "expired",
            FirstApplication => "first_application",
            OutsideMainland => "outside_mainland",
            PhotoNonconforming => "photo_nonconforming",
            InvalidIdNumber => "invalid_id_number",
            CounterOnly => "counter_only",
            DuplicateActive => "duplicate_active",
            SubmittedTwice => "submitted_twice",
            SmsNumberInvalid => "sms_number_invalid",
            CourierReturned => "courier_returned",
            CorrectionLapsed => "correction_lapsed",
            Uncollected => "uncollected",
            LateProduction => "late_production",
            Malformed => "malformed",
        }
    }

    fn tag(self) -> &'static str {
        use Scenario::*;
        match self {
            Correction => "-CORR-",
            ReviewRejected => "-REVREJ-",
            Unpaid => "-UNPAID-",
            CourierReturned => "-RETURN-",
            // The simulated desk asks for a correction, and the applicant never answers.
            CorrectionLapsed => "-CORR-LAPSE-",
            Uncollected => "-NOCOLLECT-",
            // The centre finishes after the promise (see `LATE_BY` of the simulated parties).
            LateProduction => "-LATE-",
            _ => "-",
        }
    }
}

/// A small deterministic generator (SplitMix64): the same seed gives the same applications.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

const REGIONS: [&str; 10] = [
    "110105", "310104", "440303", "330102", "510104", "120101", "500103", "370116", "610102",
    "220102",
];

fn id_number(region: &str, birth: &str, seq: u64) -> String {
    let first17 = format!("{region}{birth}{:03}", seq % 1000);
    format!("{first17}{}", check_character(&first17).expect("17 digits"))
}

fn material(bytes: u64, w: u32, h: u32, rng: &mut Rng) -> Value {
    let sha: String = (0..4).map(|_| format!("{:016x}", rng.next_u64())).collect();
    json!({"sha256": sha, "content_type": "image/jpeg", "bytes": bytes, "width_px": w, "height_px": h})
}

/// One generated application of `scenario`, numbered `n` in run `run`.
pub fn application(run: &str, n: usize, scenario: Scenario, rng: &mut Rng) -> Value {
    use Scenario::*;
    let today = chrono::Utc::now().with_timezone(&wangban_domain::application::beijing());
    let submitted_at = today.to_rfc3339();
    let region = REGIONS[rng.below(REGIONS.len() as u64) as usize];
    let year = 1960 + rng.below(45);
    let birth = format!("{year}{:02}{:02}", 1 + rng.below(12), 1 + rng.below(28));
    let date = today.date_naive();
    let expiring = (date + chrono::Duration::days(30 + rng.below(120) as i64)).to_string();
    let far = (date + chrono::Duration::days(900)).to_string();
    let (kind, reason, expires, delivery) = match scenario {
        PermitPickup | Uncollected => ("hk_macao_permit", "lost", far.clone(), "pickup"),
        TaiwanStolenCourier => ("taiwan_permit", "stolen", far.clone(), "courier"),
        VisaPagesFullPickup => ("passport", "visa_pages_full", far.clone(), "pickup"),
        Correction | Unpaid => ("passport", "damaged", far.clone(), "courier"),
        _ => ("passport", "expiring_soon", expiring.clone(), "courier"),
    };
    let phone = if scenario == SmsNumberInvalid {
        "10012345678".to_string()
    } else {
        format!("13{:09}", rng.below(1_000_000_000))
    };
    let mut app = json!({
        "application_id": format!("{run}{}{n:06}", scenario.tag()),
        "submitted_at": submitted_at,
        "applicant": {
            "id_number": id_number(region, &birth, 100 + n as u64),
            "name": "测试申请人", "phone": phone, "hukou_region": region, "category": "ordinary"
        },
        "identity_check": {"passed": true, "checked_at": submitted_at},
        "in_mainland": true,
        "document": {"kind": kind, "number": format!("E{:08}", rng.below(100_000_000)), "expires_on": expires, "fingerprints_on_file": true},
        "reason": reason,
        "materials": {
            "photo": material(40_000, 360, 480, rng),
            "signature": material(30_000, 600, 300, rng),
            "id_card_front": material(200_000, 1200, 760, rng),
            "id_card_back": material(200_000, 1200, 760, rng)
        },
        "delivery": if delivery == "pickup" { json!({"method": "pickup"}) } else { json!({
            "method": "courier", "recipient": "测试收件人", "phone": phone,
            "address": {"province": "北京市", "city": "北京市", "district": "朝阳区", "street": "建国路 1 号", "postcode": "100020"}
        })}
    });
    match scenario {
        Under16 => {
            let teen = date.format("%Y%m%d").to_string();
            let birth = format!(
                "{}{}",
                date.format("%Y").to_string().parse::<i32>().unwrap_or(2026) - 15,
                &teen[4..]
            );
            app["applicant"]["id_number"] = json!(id_number(region, &birth, 100 + n as u64));
        }
        NotPilotCity => app["applicant"]["hukou_region"] = json!("130202"),
        Expired => {
            app["document"]["expires_on"] = json!((date - chrono::Duration::days(3)).to_string())
        }
        FirstApplication => app["document"] = Value::Null,
        OutsideMainland => app["in_mainland"] = json!(false),
        PhotoNonconforming => app["materials"]["photo"]["width_px"] = json!(300),
        InvalidIdNumber => {
            let good = app["applicant"]["id_number"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let last = if good.ends_with('0') { '1' } else { '0' };
            app["applicant"]["id_number"] = json!(format!("{}{last}", &good[..17]));
        }
        CounterOnly => app["applicant"]["category"] = json!("state_functionary"),
        _ => {}
    }
    app
}

/// The files a demo run's applicants upload, stored once (content-addressed, so every applicant
/// of a scenario shares them): a photo of the guide's size (a narrower one for the scenario whose
/// photo does not conform), a signature and its correction, both sides of the identity card.
#[derive(Debug)]
pub struct Uploads {
    photo: Value,
    narrow_photo: Value,
    signature: Value,
    /// The signature a corrected application brings instead.
    pub corrected_signature: Value,
    id_card_front: Value,
    id_card_back: Value,
}

impl Uploads {
    /// Makes the files (real JPEGs, seeded by `seed`) and puts them in `store`.
    pub async fn put(
        store: &dyn wangban_materials::MaterialStore,
        seed: u64,
    ) -> anyhow::Result<Uploads> {
        let (kib20, kib80) = (20 * 1024, 80 * 1024);
        let declared = async |bytes: Vec<u8>, w: u16, h: u16| -> anyhow::Result<Value> {
            let sha = store
                .put(&bytes)
                .await
                .map_err(|e| anyhow::anyhow!("putting the demo's uploads: {e}"))?;
            Ok(
                json!({"sha256": sha, "content_type": "image/jpeg", "bytes": bytes.len(),
                      "width_px": w, "height_px": h}),
            )
        };
        use crate::images::{Picture, picture, portrait_sized};
        let photo = |w, s| portrait_sized(w, 480, kib20, kib80, seed + s);
        Ok(Uploads {
            photo: declared(photo(360, 0), 360, 480).await?,
            narrow_photo: declared(photo(300, 1), 300, 480).await?,
            signature: declared(
                picture(Picture::Signature, 600, 300, 80, seed + 2),
                600,
                300,
            )
            .await?,
            corrected_signature: declared(
                picture(Picture::Signature, 600, 300, 80, seed + 3),
                600,
                300,
            )
            .await?,
            id_card_front: declared(
                picture(Picture::CardFront, 1200, 760, 60, seed + 4),
                1200,
                760,
            )
            .await?,
            id_card_back: declared(
                picture(Picture::CardBack, 1200, 760, 60, seed + 5),
                1200,
                760,
            )
            .await?,
        })
    }

    /// Declares the stored files in `app`, as the portal would for `scenario`.
    pub fn declare(&self, app: &mut Value, scenario: Scenario) {
        let photo = if scenario == Scenario::PhotoNonconforming {
            // The portal declares a conforming 360 px photo; the file is 300 px wide, and the
            // file decides (its disagreement is on the case's timeline).
            let mut declared = self.narrow_photo.clone();
            declared["width_px"] = json!(360);
            declared
        } else {
            self.photo.clone()
        };
        app["materials"] = json!({
            "photo": photo, "signature": self.signature,
            "id_card_front": self.id_card_front, "id_card_back": self.id_card_back,
        });
    }
}

/// How one scenario went in a demo run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScenarioCount {
    pub cases: usize,
    pub unexpected: usize,
}

/// The outcome of a demo run.
#[derive(Debug)]
pub struct Report {
    pub cases: usize,
    pub by_state: BTreeMap<String, usize>,
    pub unexpected: Vec<(String, String, String)>,
    /// Per scenario: applications driven and how many did not end as expected.
    pub scenarios: BTreeMap<&'static str, ScenarioCount>,
    pub elapsed: Duration,
    pub sample_case: Option<String>,
    /// The prefix of every application id of the run.
    pub run_id: String,
}

/// The longest correction window the demo waits out to show a lapsed correction.
pub const LAPSE_IN_REACH: Duration = Duration::from_secs(600);

/// Runs `cases` applications through a pipeline with every worker, and reports.
pub async fn run(
    settings: &Settings,
    cases: usize,
    seed: u64,
    progress: bool,
) -> anyhow::Result<(Pipeline, Report)> {
    let pipeline = Pipeline::connect_as_portal(settings).await?;
    let running = pipeline.spawn(&WORKERS)?;
    let report = drive(&pipeline, settings, cases, seed, progress, None).await;
    running.stop().await;
    Ok((pipeline, report?))
}

/// Plays the portal and the applicants against workers running anywhere (in this process or in
/// others sharing the broker and database): submits `cases` applications, resubmits corrected
/// ones when asked, and waits until every case ends or the time budget runs out.
pub async fn drive(
    pipeline: &Pipeline,
    settings: &Settings,
    cases: usize,
    seed: u64,
    progress: bool,
    on_submitted: Option<&tokio::sync::Notify>,
) -> anyhow::Result<Report> {
    let run_id = format!(
        "DEMO{:06X}",
        (Rng::new(seed ^ uuid::Uuid::new_v4().as_u128() as u64).next_u64()) & 0xFF_FFFF
    );
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    // With a materials store the applicants upload real files, and intake checks those.
    let uploads = match &settings.materials {
        Some(store) => Some(Uploads::put(store.0.as_ref(), seed).await?),
        None => None,
    };

    let mut expected: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut scenario_of: BTreeMap<String, Scenario> = BTreeMap::new();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut corrections: BTreeMap<String, Value> = BTreeMap::new();
    let mut refused = 0usize;
    let (mut n, mut made) = (0usize, 0usize);
    // An unanswered correction lapses only after WANGBAN_RESUBMIT_WITHIN_SECS (7 days by
    // default): that scenario is driven only when the window is short enough to wait for.
    let lapse_in_reach = settings.resubmit_within <= LAPSE_IN_REACH;
    // A production order finishes late only on a clock that can be moved past the promise: the
    // driver moves the workers' clock (`settings.clock`, shared with the workers of this process)
    // once every other case has ended.
    let late_in_reach = settings.clock.is_controlled();
    while made < cases {
        let mut scenario = Scenario::ALL[n % Scenario::ALL.len()];
        if scenario == Scenario::CorrectionLapsed && !lapse_in_reach {
            scenario = Scenario::Correction;
        }
        if scenario == Scenario::LateProduction && !late_in_reach {
            scenario = Scenario::PassportCourier;
        }
        if scenario == Scenario::DuplicateActive && made + 2 > cases {
            scenario = Scenario::PassportCourier; // the pair would not fit in N
        }
        made += if scenario == Scenario::DuplicateActive {
            2
        } else {
            1
        };
        n += 1;
        let mut app = application(&run_id, n, scenario, &mut rng);
        if let Some(u) = &uploads {
            u.declare(&mut app, scenario);
        }
        let id = app["application_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match scenario {
            Scenario::Malformed => {
                let mut bad = app.clone();
                if let Some(a) = bad["applicant"].as_object_mut() {
                    a.remove("phone");
                }
                pipeline.submit(&bad, false).await?;
                refused += 1;
                continue;
            }
            Scenario::DuplicateActive => {
                // The same person and document kind as an earlier, still open application.
                let mut first = app.clone();
                first["application_id"] = json!(format!("{id}A"));
                pipeline.submit(&first, false).await?;
                expected.insert(format!("{id}A"), "delivered");
                scenario_of.insert(format!("{id}A"), scenario);
                pipeline.submit(&app, false).await?;
                pairs.push((format!("{id}A"), id.clone()));
            }
            Scenario::SubmittedTwice => {
                pipeline.submit(&app, false).await?;
                pipeline.submit(&app, false).await?;
            }
            Scenario::Correction => {
                pipeline.submit(&app, false).await?;
                corrections.insert(id.clone(), app.clone());
            }
            _ => {
                pipeline.submit(&app, false).await?;
            }
        }
        scenario_of.insert(id.clone(), scenario);
        expected.insert(id, scenario.expected());
    }
    if let Some(n) = on_submitted {
        n.notify_one();
    }

    let budget = Duration::from_secs(60)
        + Duration::from_millis(60 * cases as u64)
        + settings.fees.payment_window * 2
        + if lapse_in_reach {
            settings.resubmit_within * 2
        } else {
            Duration::ZERO
        };
    let mut resubmitted: BTreeSet<String> = BTreeSet::new();
    let late: BTreeSet<&String> = scenario_of
        .iter()
        .filter(|(_, s)| **s == Scenario::LateProduction)
        .map(|(id, _)| id)
        .collect();
    let mut clock_moved = late.is_empty();
    let mut last_line = Instant::now();
    let states = loop {
        // The store may be away for a while (a fault-injection run restarts it): keep waiting.
        let mut states = match pipeline.runtime.store.states_by_application(&run_id).await {
            Ok(s) => s,
            Err(e) if e.is_transient() && started.elapsed() < budget => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // Of a duplicate pair, whichever intake saw first stays open: with several intake
        // replicas that may be either one.
        for (first, second) in &pairs {
            let (a, b) = (states.get(first).cloned(), states.get(second).cloned());
            if a.as_deref() == Some("rejected") && b.as_deref() == Some("delivered") {
                states.insert(first.clone(), "delivered".into());
                states.insert(second.clone(), "rejected".into());
            }
        }
        for (id, app) in &corrections {
            if states.get(id).map(String::as_str) == Some("correction_requested")
                && resubmitted.insert(id.clone())
            {
                let mut fixed = app.clone();
                fixed["submitted_at"] = json!(
                    chrono::Utc::now()
                        .with_timezone(&wangban_domain::application::beijing())
                        .to_rfc3339()
                );
                // The corrected upload: a new signature, a new name.
                match &uploads {
                    Some(u) => fixed["materials"]["signature"] = u.corrected_signature.clone(),
                    None => fixed["materials"]["signature"]["sha256"] = json!("cd".repeat(32)),
                }
                if pipeline.submit(&fixed, true).await.is_err() {
                    resubmitted.remove(id); // the broker is away: the applicant tries again
                }
            }
        }
        let done = expected
            .iter()
            .filter(|(id, want)| states.get(*id).map(String::as_str) == Some(**want))
            .count();
        // Every other case has ended and the late orders are with the centre: the days pass.
        if !clock_moved
            && done == expected.len() - late.len()
            && late
                .iter()
                .all(|id| states.get(*id).map(String::as_str) == Some("in_production"))
        {
            settings
                .clock
                .advance(wangban_providers::simulated::LATE_BY);
            clock_moved = true;
            if progress {
                crate::progress::show(&format!(
                    "[demo] the clock moves {} days on: the centre finishes the late orders",
                    wangban_providers::simulated::LATE_BY.as_secs() / 86_400
                ));
                crate::progress::end();
            }
        }
        if progress && last_line.elapsed() > Duration::from_millis(500) {
            crate::progress::show(&format!(
                "[demo] {done}/{} cases in their final state, {:.1} s",
                expected.len(),
                started.elapsed().as_secs_f64()
            ));
            last_line = Instant::now();
        }
        if done == expected.len() || started.elapsed() > budget {
            break states;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if progress {
        crate::progress::end();
    }
    // Refused messages: wait until each is a dead letter.
    let dead = loop {
        let dead = pipeline
            .runtime
            .store
            .dead_letters(Some("intake"))
            .await
            .unwrap_or_default()
            .iter()
            .filter(|d| d.reason.contains("malformed application"))
            .count();
        if dead >= refused || started.elapsed() > budget {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // A late order is late on the record too (the production step says so).
    let late_on_record: BTreeSet<String> = if late.is_empty() {
        BTreeSet::new()
    } else {
        pipeline
            .runtime
            .store
            .late_productions()
            .await?
            .into_iter()
            .collect()
    };
    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
    let mut unexpected = Vec::new();
    let mut scenarios: BTreeMap<&'static str, ScenarioCount> = Scenario::ALL
        .iter()
        .map(|s| (s.name(), ScenarioCount::default()))
        .collect();
    for (id, want) in &expected {
        let got = states.get(id).cloned().unwrap_or_else(|| "missing".into());
        *by_state.entry(got.clone()).or_default() += 1;
        let count = scenarios
            .entry(scenario_of.get(id).map_or("unknown", |s| s.name()))
            .or_default();
        count.cases += 1;
        if got != *want {
            count.unexpected += 1;
            unexpected.push((id.clone(), want.to_string(), got));
        } else if late.contains(id) && !late_on_record.contains(&case_of(id)) {
            count.unexpected += 1;
            unexpected.push((id.clone(), format!("{want} (late)"), got));
        }
    }
    let malformed = scenarios.entry(Scenario::Malformed.name()).or_default();
    malformed.cases = refused;
    malformed.unexpected = refused.saturating_sub(dead);
    if refused > 0 {
        by_state.insert("refused (dead-lettered)".into(), dead.min(refused));
        for _ in dead..refused {
            unexpected.push((
                "(malformed)".into(),
                "refused".into(),
                "not dead-lettered".into(),
            ));
        }
    }
    let sample_case = corrections
        .keys()
        .next()
        .cloned()
        .or_else(|| expected.keys().next().cloned());
    Ok(Report {
        cases: expected.len() + refused,
        by_state,
        unexpected,
        scenarios,
        elapsed: started.elapsed(),
        sample_case,
        run_id,
    })
}

/// The case id of an application id (the id the store keys cases by).
fn case_of(application_id: &str) -> String {
    wangban_domain::ids::ApplicationId::parse(application_id)
        .map(|a| wangban_domain::ids::CaseId::for_application(&a).to_string())
        .unwrap_or_default()
}
