//! What a run keeps of each visit as it ends (counts, a latency
//! histogram, what the invariants need) and the invariants themselves: no
//! slot given twice, every quote as the doctor's table says, every patient
//! at an outcome, every booked patient quoted. Whole rows are kept only
//! for the table (at most [`TABLE_LIMIT`] patients), so memory per patient
//! stays a few bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::roster::Roster;
use super::{Invariant, PatientRow, TABLE_LIMIT};
use crate::client::DoctorOverrides;
use crate::data::Fixtures;
use crate::patient::{Outcome, Phase};
use crate::stats::{Latencies, plural};

/// The running account of a run's visits.
pub(super) struct Tally<'a> {
    fixtures: &'a Fixtures,
    /// The data's slots' doctors and ports: for answers that name only a
    /// port, and to hold every grant to its slot's row.
    slot_doctor: HashMap<u64, (&'a str, u16)>,
    /// Where each doctor really is, by name (`--doctor`, or the doctors
    /// this process started): a grant may name that port too.
    routed_ports: HashMap<String, u16>,
    /// Whose port each of the data's ports is.
    port_doctor: HashMap<u16, &'a str>,
    grants_checked: usize,
    wrong_grants: Vec<String>,
    pub(super) reached: usize,
    pub(super) outcomes: BTreeMap<String, usize>,
    pub(super) latencies: Latencies,
    pub(super) retries: u64,
    /// (slot, visitor) for every reservation a patient reported.
    pub(super) given: Vec<(u64, usize)>,
    quotes_checked: usize,
    wrong_quotes: Vec<String>,
    unknown_doctors: BTreeSet<String>,
    /// The first few visits that failed, and how many did.
    failed: Vec<String>,
    failed_count: usize,
    pub(super) rows: Option<Vec<Option<PatientRow>>>,
    /// (ended at ms, latency µs) of every `stride`-th visit, for the
    /// report's chart: at most [`ENDS_KEPT`], thinned as the run grows.
    pub(super) ends: Vec<(u64, u64)>,
    stride: usize,
    started: std::time::Instant,
    /// Per phase, in [`Phase::ALL`] order.
    pub(super) phases: [PhaseTally; 4],
}

/// One phase's account over the run.
#[derive(Default)]
pub(super) struct PhaseTally {
    /// Visits that began the phase.
    pub(super) count: u64,
    /// Visits that began it and ended there, not quoted.
    pub(super) failures: u64,
    /// From each request to its answer, whatever it said.
    pub(super) latencies: Latencies,
}

/// The most visits the chart of a report keeps.
const ENDS_KEPT: usize = 20_000;

/// Where the center's table (`holders`, in index order) and the patients'
/// accounts (`given`, sorted) disagree: one walk over both.
fn held_as_reported(
    holders: &[(u64, String)],
    given: &[(u64, usize)],
    roster: &Roster,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut runs = given.chunk_by(|a, b| a.0 == b.0).peekable();
    for (slot, holder) in holders {
        while let Some(run) = runs.next_if(|run| run[0].0 < *slot) {
            problems.push(format!(
                "patients report slot {} but the center holds it for no one",
                run[0].0
            ));
        }
        match runs.next_if(|run| run[0].0 == *slot) {
            Some([(_, k)]) if roster.visitor(*k).patient.username == *holder => {}
            _ => problems.push(format!("the center holds slot {slot} for {holder}")),
        }
    }
    for run in runs {
        problems.push(format!(
            "patients report slot {} but the center holds it for no one",
            run[0].0
        ));
    }
    problems
}

/// At most this many failures or wrong quotes are quoted in a report.
const QUOTED_PROBLEMS: usize = 5;

impl<'a> Tally<'a> {
    pub(super) fn new(fixtures: &'a Fixtures, patients: usize) -> Tally<'a> {
        Tally {
            fixtures,
            slot_doctor: fixtures
                .slots
                .iter()
                .map(|s| (s.index, (s.doctor.as_str(), s.port)))
                .collect(),
            routed_ports: HashMap::new(),
            port_doctor: fixtures
                .slots
                .iter()
                .map(|s| (s.port, s.doctor.as_str()))
                .collect(),
            grants_checked: 0,
            wrong_grants: Vec::new(),
            reached: 0,
            outcomes: BTreeMap::new(),
            latencies: Latencies::new(),
            retries: 0,
            given: Vec::new(),
            quotes_checked: 0,
            wrong_quotes: Vec::new(),
            unknown_doctors: BTreeSet::new(),
            failed: Vec::new(),
            failed_count: 0,
            rows: (patients <= TABLE_LIMIT).then(|| vec![None; patients]),
            ends: Vec::new(),
            stride: 1,
            started: std::time::Instant::now(),
            phases: Default::default(),
        }
    }

    /// Where the doctors really are (`NAME` → `[HOST:]PORT`): their ports
    /// are grants' ports too.
    pub(super) fn with_routes(mut self, doctors: &DoctorOverrides) -> Self {
        for (name, addr) in &doctors.by_name {
            let port = addr.rsplit(':').next().and_then(|p| p.parse().ok());
            if let Some(port) = port {
                self.routed_ports.insert(name.clone(), port);
            }
        }
        self
    }

    /// How many visits each kept end stands for.
    pub(super) fn ends_weight(&self) -> u64 {
        self.stride as u64
    }

    pub(super) fn add(&mut self, k: usize, row: PatientRow) {
        let visit = &row.visit;
        self.reached += 1;
        *self
            .outcomes
            .entry(visit.outcome.label().to_owned())
            .or_insert(0) += 1;
        self.latencies
            .record(std::time::Duration::from_secs_f64(row.latency_ms / 1e3));
        if self.reached.is_multiple_of(self.stride) {
            if self.ends.len() >= ENDS_KEPT {
                // Keep every other one, and take half as many from now on.
                let mut k = 0;
                self.ends.retain(|_| {
                    k += 1;
                    k % 2 == 0
                });
                self.stride *= 2;
            }
            self.ends.push((
                self.started.elapsed().as_millis() as u64,
                (row.latency_ms * 1e3) as u64,
            ));
        }
        self.retries += u64::from(visit.retries);
        let failed_in = (visit.outcome != Outcome::Quoted)
            .then_some(visit.phases.last_begun)
            .flatten();
        for (phase, tally) in Phase::ALL.into_iter().zip(&mut self.phases) {
            let answered = visit.phases.answered_us[phase as usize];
            if answered.is_none() && failed_in != Some(phase) {
                continue;
            }
            tally.count += 1;
            if failed_in == Some(phase) {
                tally.failures += 1;
            }
            if let Some(us) = answered {
                tally.latencies.record(std::time::Duration::from_micros(us));
            }
        }
        if let Some(slot) = visit.slot {
            self.given.push((slot, k));
            self.check_grant(&row, slot);
        }
        if let Some(cost) = visit.cost {
            self.check_quote(&row, cost);
        }
        if matches!(
            visit.outcome,
            Outcome::Protocol(_)
                | Outcome::Connection(_)
                | Outcome::DoctorSilent
                | Outcome::DoctorEmpty
                | Outcome::Cancelled
        ) {
            self.failed_count += 1;
            if self.failed.len() < QUOTED_PROBLEMS {
                self.failed
                    .push(format!("{}: {}", row.label, visit.outcome));
            }
        }
        if let Some(rows) = &mut self.rows
            && let Some(place) = rows.get_mut(k)
        {
            *place = Some(row);
        }
    }

    /// The grant must name the slot's doctor and port in the data (a port
    /// alone, its port): a center that grants another doctor's port sends
    /// the patient to a quote that is not the slot's.
    fn check_grant(&mut self, row: &PatientRow, slot: u64) {
        let Some(&(doctor, port)) = self.slot_doctor.get(&slot) else {
            return;
        };
        self.grants_checked += 1;
        let named = row.visit.doctor.as_deref();
        let doctor_fits = named.is_none_or(|d| d.eq_ignore_ascii_case(doctor));
        // A port is wrong when it is another doctor's (in the data, or
        // where that doctor really is); a port the data does not know at
        // all (a center with data of its own) is not judged.
        let others_port = |p: u16| {
            self.port_doctor
                .get(&p)
                .is_some_and(|&other| other != doctor)
                || self
                    .routed_ports
                    .iter()
                    .any(|(other, &other_port)| other != doctor && other_port == p)
        };
        // Where this doctor really is comes first: a real port may also be
        // another doctor's in the data.
        let own_port = |p: u16| p == port || self.routed_ports.get(doctor).is_some_and(|&r| r == p);
        let port_fits = row
            .visit
            .doctor_port
            .is_none_or(|p| own_port(p) || !others_port(p));
        if !(doctor_fits && port_fits) && self.wrong_grants.len() < QUOTED_PROBLEMS {
            self.wrong_grants.push(format!(
                "{} was granted slot {slot} as {} {}, but it is {doctor}'s at port {port} in the data",
                row.label,
                named.unwrap_or("(a port alone)"),
                row.visit.doctor_port.map_or("?".to_owned(), |p| p.to_string()),
            ));
        }
    }

    /// The quote must be the doctor's fee for the patient's plan. The doctor
    /// is the one the center named, or (for a port alone) the slot's in the
    /// data.
    fn check_quote(&mut self, row: &PatientRow, cost: u64) {
        let visit = &row.visit;
        let doctor = visit.doctor.as_deref().or_else(|| {
            visit
                .slot
                .and_then(|s| self.slot_doctor.get(&s).map(|d| d.0))
        });
        let Some(table) = doctor.and_then(|d| self.fixtures.doctor(d)) else {
            self.unknown_doctors
                .insert(doctor.unwrap_or("unnamed").to_owned());
            return;
        };
        self.quotes_checked += 1;
        let expected = table.fees.cost(&row.plan);
        if expected != Some(cost) && self.wrong_quotes.len() < QUOTED_PROBLEMS {
            self.wrong_quotes.push(format!(
                "{} was quoted {cost} by {}, expected {}",
                row.label,
                table.name,
                expected.map_or("no cost (unknown plan)".to_owned(), |c| c.to_string())
            ));
        }
    }

    /// Checks the run against the patients' accounts and, when the center
    /// ran here, its table's `holders`; sorts `given` by slot on the way.
    pub(super) fn invariants(
        &mut self,
        roster: &Roster,
        holders: Option<&[(u64, String)]>,
    ) -> Vec<Invariant> {
        let mut invariants = Vec::new();

        // No slot given twice: by the patients' own accounts, and as the
        // center's table records it when the center ran here.
        self.given.sort_unstable();
        let given = &self.given;
        let mut twice = Vec::new();
        for run in given
            .chunk_by(|a, b| a.0 == b.0)
            .filter(|run| run.len() > 1)
        {
            let labels: Vec<String> = run.iter().map(|&(_, k)| roster.visitor(k).label).collect();
            twice.push(format!("slot {} to {}", run[0].0, labels.join(", ")));
        }
        let mismatched =
            holders.map_or_else(Vec::new, |holders| held_as_reported(holders, given, roster));
        let ok = twice.is_empty() && mismatched.is_empty();
        invariants.push(Invariant {
            name: "no slot reserved twice".into(),
            ok,
            detail: if ok {
                format!(
                    "{}, each once, {}",
                    plural(given.len() as u64, "slot booked", "slots booked"),
                    if holders.is_some() {
                        "as the store records"
                    } else {
                        "as the patients report"
                    }
                )
            } else {
                twice
                    .into_iter()
                    .chain(mismatched)
                    .take(2 * QUOTED_PROBLEMS)
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        });

        invariants.push(Invariant {
            name: "every grant names the slot's doctor and port".into(),
            ok: self.wrong_grants.is_empty(),
            detail: if self.wrong_grants.is_empty() {
                plural(
                    self.grants_checked as u64,
                    "grant checked against the data",
                    "grants checked against the data",
                )
            } else {
                self.wrong_grants.join("; ")
            },
        });

        let mut detail = if self.wrong_quotes.is_empty() {
            plural(
                self.quotes_checked as u64,
                "quote checked",
                "quotes checked",
            )
        } else {
            self.wrong_quotes.join("; ")
        };
        if !self.unknown_doctors.is_empty() {
            detail.push_str(&format!(
                "; not checked: no fee table in the data for {}",
                self.unknown_doctors
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        invariants.push(Invariant {
            name: "every quote matches the doctor's table".into(),
            ok: self.wrong_quotes.is_empty(),
            detail,
        });

        invariants.push(Invariant {
            name: "every patient reached an outcome".into(),
            ok: self.reached == roster.count,
            detail: format!(
                "{} of {}",
                self.reached,
                plural(roster.count as u64, "patient", "patients")
            ),
        });
        invariants.push(Invariant {
            name: "no visit failed (every booked patient was quoted)".into(),
            ok: self.failed_count == 0,
            detail: if self.failed_count == 0 {
                "every visit ended in a quote, a refusal or a lost race".into()
            } else {
                format!("{} failed: {}", self.failed_count, self.failed.join("; "))
            },
        });
        invariants
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Source;

    #[test]
    fn the_tables_and_the_accounts_are_compared_slot_by_slot() {
        let source = Source::built_in();
        let fixtures = Fixtures::load(&source).unwrap();
        let roster = Roster::in_process(&fixtures, &source, 3);
        let holders = [(1, "patient1".to_owned()), (4, "patient3".to_owned())];
        assert!(held_as_reported(&holders, &[(1, 0), (4, 2)], &roster).is_empty());
        assert_eq!(
            held_as_reported(&holders, &[(1, 1), (2, 0), (4, 2), (9, 1)], &roster),
            [
                "the center holds slot 1 for patient1",
                "patients report slot 2 but the center holds it for no one",
                "patients report slot 9 but the center holds it for no one",
            ]
        );
        assert_eq!(
            held_as_reported(&holders, &[(4, 2), (4, 1)], &roster),
            [
                "the center holds slot 1 for patient1",
                "the center holds slot 4 for patient3",
            ]
        );
    }
}
