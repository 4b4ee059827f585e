//! Who visits in a run: the data's users by name, then generated
//! `patientK`/`passwordKKK` (in-process), or the logins given, reused in
//! turn (against a center elsewhere). The k-th visitor is made when its
//! turn comes, so a run of a hundred thousand patients keeps no list.

use std::collections::HashMap;

use crate::data::{Fixtures, Patient, Source, Users};

/// Who visits. The k-th visitor is made when its turn comes, so a run of a
/// hundred thousand patients keeps no list of them.
pub(super) struct Roster {
    /// Logins in turn; `None` for in-process runs, whose patients are the
    /// data's users by name (`patientK`), then generated ones.
    logins: Option<Vec<(String, String)>>,
    /// The data's users, for in-process runs.
    data_users: Users,
    /// Plans of the data's `NAMEinsurance.txt` files.
    data_plans: HashMap<String, String>,
    /// Every plan some doctor quotes, taken in turn by the others.
    plans: Vec<String>,
    pub(super) count: usize,
}

impl Roster {
    /// The data's users, then `patientK` with `passwordKKK`.
    pub(super) fn in_process(fixtures: &Fixtures, source: &Source, count: usize) -> Roster {
        Roster {
            logins: None,
            data_users: fixtures.users.clone(),
            data_plans: data_plans(fixtures.users.pairs().into_iter().map(|(u, _)| u), source),
            plans: plans(fixtures),
            count,
        }
    }

    /// `users` in turn (shorter names first, then in name order).
    pub(super) fn cycling(
        users: &Users,
        fixtures: &Fixtures,
        source: &Source,
        count: usize,
    ) -> anyhow::Result<Roster> {
        let logins: Vec<(String, String)> = users
            .pairs()
            .into_iter()
            .map(|(u, p)| (u.to_owned(), p.to_owned()))
            .collect();
        anyhow::ensure!(!logins.is_empty(), "no users to log in as");
        Ok(Roster {
            data_plans: data_plans(logins.iter().map(|(u, _)| u.as_str()), source),
            logins: Some(logins),
            data_users: Users::default(),
            plans: plans(fixtures),
            count,
        })
    }

    /// Visitor `k` (from 0): its credentials, its plan (its own plan file
    /// when the data has one, the plans in turn otherwise) and its label. A
    /// login used more than once is labelled `USER.K`, K counting its visits.
    pub(super) fn visitor(&self, k: usize) -> Visitor {
        let plan_in_turn = || self.plans[k % self.plans.len()].clone();
        let (username, password, label) = match &self.logins {
            Some(logins) => {
                let (username, password) = &logins[k % logins.len()];
                let label = if self.count > logins.len() {
                    format!("{username}.{}", k / logins.len() + 1)
                } else {
                    username.clone()
                };
                (username.clone(), password.clone(), label)
            }
            None => {
                let username = format!("patient{}", k + 1);
                let password = match self.data_users.password(&username) {
                    Some(password) => password.to_owned(),
                    None => format!("password{}", (k + 1).to_string().repeat(3)),
                };
                (username.clone(), password, username)
            }
        };
        let plan = self
            .data_plans
            .get(&username)
            .cloned()
            .unwrap_or_else(plan_in_turn);
        Visitor {
            patient: Patient {
                username,
                password,
                plan,
            },
            label,
        }
    }

    /// Every visitor's credentials, for a center of this process.
    pub(super) fn users(&self) -> Users {
        Users::from_pairs((0..self.count).map(|k| {
            let patient = self.visitor(k).patient;
            (patient.username, patient.password)
        }))
    }
}

/// The plans of the `NAMEinsurance.txt` files the data has for `names`.
fn data_plans<'a>(
    names: impl Iterator<Item = &'a str>,
    source: &Source,
) -> HashMap<String, String> {
    names
        .filter_map(|name| {
            Patient::load(source, name)
                .ok()
                .map(|p| (name.to_owned(), p.plan))
        })
        .collect()
}

/// A patient of a run and how it is named in messages and diagrams.
pub(super) struct Visitor {
    pub(super) patient: Patient,
    pub(super) label: String,
}

/// Every plan some doctor quotes, in order; `insurance1` when none does.
pub(super) fn plans(fixtures: &Fixtures) -> Vec<String> {
    let mut all: Vec<String> = fixtures
        .doctors
        .iter()
        .flat_map(|d| d.fees.plans().map(str::to_owned))
        .collect();
    all.sort();
    all.dedup();
    if all.is_empty() {
        all.push("insurance1".to_owned());
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn generated_patients_follow_the_classic_pattern() {
        let source = Source::built_in();
        let fixtures = Fixtures::load(&source).unwrap();
        let roster = Roster::in_process(&fixtures, &source, 5);
        let summary: Vec<(String, String, String, String)> = (0..5)
            .map(|k| {
                let v = roster.visitor(k);
                (
                    v.label,
                    v.patient.username,
                    v.patient.password,
                    v.patient.plan,
                )
            })
            .collect();
        let expected = [
            ("patient1", "password111", "insurance1"),
            ("patient2", "password222", "insurance2"),
            ("patient3", "password333", "insurance3"),
            ("patient4", "password444", "insurance1"),
            ("patient5", "password555", "insurance2"),
        ]
        .map(|(u, p, plan)| (u.to_owned(), u.to_owned(), p.to_owned(), plan.to_owned()));
        assert_eq!(summary, expected);
        assert_eq!(roster.users().len(), 5);
    }

    #[test]
    fn logins_are_reused_in_turn_and_labelled_by_visit() {
        let source = Source::built_in();
        let fixtures = Fixtures::load(&source).unwrap();
        let users = Users::from_pairs([
            ("ann".to_owned(), "a".to_owned()),
            ("patient2".to_owned(), "password222".to_owned()),
        ]);
        let roster = Roster::cycling(&users, &fixtures, &source, 3).unwrap();
        let visitors: Vec<(String, String)> = (0..3)
            .map(|k| {
                let v = roster.visitor(k);
                (v.label, v.patient.plan)
            })
            .collect();
        assert_eq!(
            visitors,
            [
                ("ann.1".to_owned(), "insurance1".to_owned()),
                ("patient2.1".to_owned(), "insurance2".to_owned()),
                ("ann.2".to_owned(), "insurance3".to_owned()),
            ]
        );
        assert!(Roster::cycling(&Users::default(), &fixtures, &source, 3).is_err());
    }
}
