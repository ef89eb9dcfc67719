//! The pilot cities: which household registrations may apply online, and from which date.
//!
//! This is configuration, not code: the pilot grows. The shipped list is `data/pilot-cities.json`;
//! an operator can load another file of the same shape.

use chrono::NaiveDate;
use serde::Deserialize;

/// One pilot city: its division-code prefixes, the Beijing date it joined, and where that is stated.
#[derive(Clone, Debug, Deserialize)]
pub struct PilotCity {
    pub name: String,
    #[serde(default)]
    pub name_en: String,
    pub prefixes: Vec<String>,
    pub since: NaiveDate,
    /// The public notice the entry comes from. Every shipped entry names one; an operator's own
    /// file may leave it out.
    #[serde(default)]
    pub source: String,
}

/// The list of pilot cities.
#[derive(Clone, Debug, Deserialize)]
pub struct PilotCities {
    cities: Vec<PilotCity>,
}

const SHIPPED: &str = include_str!("../data/pilot-cities.json");

impl Default for PilotCities {
    fn default() -> Self {
        PilotCities::from_json(SHIPPED).expect("the shipped pilot-city list parses")
    }
}

impl PilotCities {
    /// Parses a list of the shape of `data/pilot-cities.json`, checking every prefix is digits.
    pub fn from_json(text: &str) -> Result<PilotCities, String> {
        let list: PilotCities =
            serde_json::from_str(text).map_err(|e| format!("pilot-city list: {e}"))?;
        for c in &list.cities {
            if c.prefixes.is_empty()
                || c.prefixes
                    .iter()
                    .any(|p| p.is_empty() || p.len() > 6 || !p.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(format!("pilot-city list: {} has an invalid prefix", c.name));
            }
        }
        Ok(list)
    }

    /// The cities in the list.
    pub fn cities(&self) -> &[PilotCity] {
        &self.cities
    }

    /// The pilot city a household registration belongs to on `date`, if any.
    pub fn city_for(&self, hukou_region: &str, date: NaiveDate) -> Option<&PilotCity> {
        self.cities.iter().find(|c| {
            c.since <= date
                && c.prefixes
                    .iter()
                    .any(|p| hukou_region.starts_with(p.as_str()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn all_twenty_seed_cities_from_their_start() {
        let list = PilotCities::default();
        let regions = [
            ("110105", "北京"),
            ("120101", "天津"),
            ("310104", "上海"),
            ("500103", "重庆"),
            ("210102", "沈阳"),
            ("230102", "哈尔滨"),
            ("320102", "南京"),
            ("330102", "杭州"),
            ("330203", "宁波"),
            ("340102", "合肥"),
            ("350203", "厦门"),
            ("370102", "济南"),
            ("370116", "济南"),
            ("370117", "济南"),
            ("370202", "青岛"),
            ("410102", "郑州"),
            ("440103", "广州"),
            ("440303", "深圳"),
            ("440402", "珠海"),
            ("510104", "成都"),
            ("530102", "昆明"),
            ("610102", "西安"),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (region, city) in regions {
            assert_eq!(
                list.city_for(region, d("2024-05-06"))
                    .map(|c| c.name.as_str()),
                Some(city),
                "{region}"
            );
            assert!(
                list.city_for(region, d("2024-05-05")).is_none(),
                "{region} before the start"
            );
            seen.insert(city);
        }
        assert_eq!(seen.len(), 20);
    }

    #[test]
    fn expansion_cities_count_only_from_2025_11_20() {
        let list = PilotCities::default();
        assert!(list.city_for("220102", d("2025-11-19")).is_none());
        assert_eq!(
            list.city_for("220102", d("2025-11-20")).unwrap().name,
            "长春"
        );
        assert!(list.city_for("130102", d("2025-11-20")).is_some());
        // Confirmed later from local announcements.
        assert_eq!(
            list.city_for("420106", d("2025-11-20")).unwrap().name_en,
            "Wuhan"
        );
        assert_eq!(
            list.city_for("430104", d("2025-11-20")).unwrap().name_en,
            "Changsha"
        );
    }

    #[test]
    fn a_city_that_went_live_late_counts_from_its_own_date() {
        let list = PilotCities::default();
        assert!(list.city_for("450102", d("2025-11-25")).is_none());
        assert_eq!(
            list.city_for("450102", d("2025-11-26")).unwrap().name_en,
            "Nanning"
        );
    }

    #[test]
    fn every_shipped_entry_names_its_source_and_no_prefix_is_claimed_twice() {
        let list = PilotCities::default();
        let mut prefixes = std::collections::BTreeSet::new();
        for c in list.cities() {
            assert!(!c.source.trim().is_empty(), "{} has no source", c.name_en);
            assert!(!c.name_en.is_empty(), "{} has no English name", c.name);
            for p in &c.prefixes {
                assert!(prefixes.insert(p.clone()), "{p} is listed twice");
            }
        }
        assert_eq!(list.cities().len(), 32);
    }

    #[test]
    fn cities_outside_the_pilot() {
        // Hebei, Shanxi, Jiangsu and Hubei are complete in the announcement's text: their other
        // cities are certainly outside (Tangshan, Datong, Nantong, Huangshi).
        let list = PilotCities::default();
        for region in ["130202", "140202", "320602", "420202"] {
            assert!(list.city_for(region, d("2026-11-25")).is_none(), "{region}");
        }
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(
            PilotCities::from_json(
                r#"{"cities":[{"name":"x","prefixes":["1a"],"since":"2024-01-01"}]}"#
            )
            .is_err()
        );
        assert!(PilotCities::from_json("{}").is_err());
    }
}
