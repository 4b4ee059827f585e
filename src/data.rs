//! The classic data files of PROTOCOL.md: users, availabilities, the
//! doctors' fee tables and each patient's credentials and plan.
//!
//! This module owns reading and checking them: every malformed or
//! inconsistent record is refused with its file and line. The files in
//! `fixtures/` are compiled in as the default [`Source`], so every
//! subcommand runs with no files around. Keeping state about slots is
//! the store's job (`store/`); this module only describes them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// The built-in copies of `fixtures/`.
const BUILT_IN: &[(&str, &str)] = &[
    ("users.txt", include_str!("../fixtures/users.txt")),
    (
        "availabilities.txt",
        include_str!("../fixtures/availabilities.txt"),
    ),
    ("doc1.txt", include_str!("../fixtures/doc1.txt")),
    ("doc2.txt", include_str!("../fixtures/doc2.txt")),
    ("patient1.txt", include_str!("../fixtures/patient1.txt")),
    ("patient2.txt", include_str!("../fixtures/patient2.txt")),
    (
        "patient1insurance.txt",
        include_str!("../fixtures/patient1insurance.txt"),
    ),
    (
        "patient2insurance.txt",
        include_str!("../fixtures/patient2insurance.txt"),
    ),
];

/// A data file that could not be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    /// The file as the user knows it (a path, or `built-in NAME`).
    pub file: String,
    /// 1-based line number, when the problem is one line's.
    pub line: Option<usize>,
    pub reason: String,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} line {}: {}", self.file, line, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

impl std::error::Error for DataError {}

/// Where the data files come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    dir: Option<PathBuf>,
}

impl Source {
    /// The files compiled into the binary (PROTOCOL.md's default content).
    pub fn built_in() -> Source {
        Source { dir: None }
    }

    /// The files of a directory.
    pub fn dir(path: impl Into<PathBuf>) -> Source {
        Source {
            dir: Some(path.into()),
        }
    }

    /// `--fixtures DIR` when given, the built-in files otherwise.
    pub fn from_option(dir: Option<&Path>) -> Source {
        dir.map_or_else(Source::built_in, Source::dir)
    }

    fn label(&self, name: &str) -> String {
        match &self.dir {
            Some(dir) => dir.join(name).display().to_string(),
            None => format!("built-in {name}"),
        }
    }

    /// Reads one file; a missing file is `Ok(None)`.
    fn read(&self, name: &str) -> Result<Option<File>, DataError> {
        let label = self.label(name);
        let text = match &self.dir {
            None => BUILT_IN
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, text)| (*text).to_owned()),
            Some(dir) => match std::fs::read_to_string(dir.join(name)) {
                Ok(text) => Some(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(DataError {
                        file: label,
                        line: None,
                        reason: e.to_string(),
                    });
                }
            },
        };
        Ok(text.map(|text| File { label, text }))
    }

    fn require(&self, name: &str) -> Result<File, DataError> {
        if let Some(dir) = &self.dir
            && !dir.is_dir()
        {
            return Err(DataError {
                file: dir.display().to_string(),
                line: None,
                reason: "no such directory (--fixtures names a directory of data files)".into(),
            });
        }
        self.read(name)?.ok_or_else(|| DataError {
            file: self.label(name),
            line: None,
            reason: "file not found".into(),
        })
    }
}

/// One data file's text and the name its errors give.
struct File {
    label: String,
    text: String,
}

impl File {
    /// The records: (line number, fields), blank lines skipped, fields split
    /// by runs of spaces or tabs, `\r\n` accepted.
    fn records(&self) -> impl Iterator<Item = (usize, Vec<&str>)> {
        self.text.lines().enumerate().filter_map(|(at, line)| {
            let fields: Vec<&str> = line
                .split([' ', '\t', '\r'])
                .filter(|f| !f.is_empty())
                .collect();
            (!fields.is_empty()).then_some((at + 1, fields))
        })
    }

    fn error(&self, line: usize, reason: impl Into<String>) -> DataError {
        DataError {
            file: self.label.clone(),
            line: Some(line),
            reason: reason.into(),
        }
    }

    /// Checks a record has exactly the fields `names` lists.
    fn expect_fields(&self, line: usize, fields: &[&str], names: &[&str]) -> Result<(), DataError> {
        if fields.len() == names.len() {
            Ok(())
        } else {
            Err(self.error(
                line,
                format!(
                    "expected {} fields ({}), found {}",
                    names.len(),
                    names.join(" "),
                    fields.len()
                ),
            ))
        }
    }
}

/// A bookable slot as `availabilities.txt` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub index: u64,
    pub day: String,
    pub time: String,
    pub doctor: String,
    /// The port the center tells patients; classic data may differ from the
    /// port the doctor listens on (PROTOCOL.md, interop note).
    pub port: u16,
}

/// `count` generated slots: days and times in turn, `doctors` (name and
/// port) in turn. Lazy, so a table of a hundred thousand is never held
/// twice.
pub fn generated_slots(count: u64, doctors: &[(String, u16)]) -> impl Iterator<Item = Slot> + '_ {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const TIMES: [&str; 8] = [
        "09am", "10am", "11am", "12pm", "01pm", "02pm", "03pm", "04pm",
    ];
    let count = if doctors.is_empty() { 0 } else { count };
    (1..=count).map(move |index| {
        let i = (index - 1) as usize;
        let (doctor, port) = &doctors[i % doctors.len()];
        Slot {
            index,
            day: DAYS[i % DAYS.len()].to_owned(),
            time: TIMES[(i / DAYS.len()) % TIMES.len()].to_owned(),
            doctor: doctor.clone(),
            port: *port,
        }
    })
}

/// Usernames and passwords.
#[derive(Debug, Clone, Default)]
pub struct Users {
    credentials: HashMap<String, Credential>,
}

/// One user's password, and its digest for [`Users::check`].
#[derive(Clone)]
struct Credential {
    password: String,
    digest: Digest,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(..)")
    }
}

impl Credential {
    fn new(password: String) -> Credential {
        Credential {
            digest: digest(&password),
            password,
        }
    }
}

/// A SHA-256 digest: every password compares as these 32 bytes, so no
/// comparison is cut short by a difference in length.
type Digest = [u8; 32];

fn digest(password: &str) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(password.as_bytes()).into()
}

/// What an unknown user's password is compared with: the same work as for
/// a known user, against a digest no password is likely to have.
const NO_ONE: Digest = [0; 32];

impl Users {
    /// Users from (username, password) pairs; a later pair replaces an
    /// earlier one.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Users {
        Users {
            credentials: pairs
                .into_iter()
                .map(|(user, password)| (user, Credential::new(password)))
                .collect(),
        }
    }

    /// True when `password` is `username`'s.
    ///
    /// The password given is hashed and its digest compared with the
    /// stored one by `subtle`, which looks at all 32 bytes whatever they
    /// hold: the time taken depends on the length of the password given
    /// (which the sender knows) and on nothing stored, neither where the
    /// first difference is nor how long the real password is. An unknown
    /// user costs the same hash and comparison, against [`NO_ONE`]. What is
    /// not hidden is the name's lookup, an ordinary hash-map probe (SipHash
    /// with a random key), which does not involve the password.
    pub fn check(&self, username: &str, password: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        let given = digest(password);
        let (stored, known) = match self.credentials.get(username) {
            Some(credential) => (&credential.digest, true),
            None => (&NO_ONE, false),
        };
        let same: bool = given.ct_eq(stored).into();
        same & known
    }

    pub fn len(&self) -> usize {
        self.credentials.len()
    }

    pub fn is_empty(&self) -> bool {
        self.credentials.is_empty()
    }

    /// Reads a `users.txt`-format file at `path`.
    ///
    /// # Errors
    ///
    /// The file cannot be read, or a record is malformed or repeated.
    pub fn load(path: &Path) -> Result<Users, DataError> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| DataError {
            file: label.clone(),
            line: None,
            reason: e.to_string(),
        })?;
        parse_users(&File { label, text })
    }

    /// Every (username, password), shorter names first, then in name
    /// order, so `patient2` comes before `patient10`.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        let mut pairs: Vec<(&str, &str)> = self
            .credentials
            .iter()
            .map(|(u, c)| (u.as_str(), c.password.as_str()))
            .collect();
        pairs.sort_by_key(|(u, _)| (u.len(), *u));
        pairs
    }

    /// The password of `username`, for clients that log in as known users.
    pub fn password(&self, username: &str) -> Option<&str> {
        self.credentials.get(username).map(|c| c.password.as_str())
    }
}

/// A doctor's costs per insurance plan, in whole dollars.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeeTable {
    costs: BTreeMap<String, u64>,
}

impl FeeTable {
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> FeeTable {
        FeeTable {
            costs: pairs.into_iter().map(|(p, c)| (p.to_owned(), c)).collect(),
        }
    }

    pub fn cost(&self, plan: &str) -> Option<u64> {
        self.costs.get(plan).copied()
    }

    pub fn plans(&self) -> impl Iterator<Item = &str> {
        self.costs.keys().map(String::as_str)
    }
}

/// A doctor named in the availabilities, with its fee table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doctor {
    pub name: String,
    /// The port the availabilities give for it: where it listens unless
    /// told otherwise.
    pub port: u16,
    pub fees: FeeTable,
}

/// Everything the center and the doctors need, checked for consistency.
#[derive(Debug, Clone)]
pub struct Fixtures {
    pub users: Users,
    /// In index order.
    pub slots: Vec<Slot>,
    /// In name order.
    pub doctors: Vec<Doctor>,
}

impl Fixtures {
    /// Reads `users.txt`, `availabilities.txt` and `DOCTOR.txt` for every
    /// doctor the availabilities name.
    ///
    /// # Errors
    ///
    /// A missing file, a malformed line, a duplicate user or index, a
    /// doctor with two ports or without a fee table.
    pub fn load(source: &Source) -> Result<Fixtures, DataError> {
        let users = parse_users(&source.require("users.txt")?)?;
        let availabilities = source.require("availabilities.txt")?;
        let slots = parse_slots(&availabilities)?;
        let mut doctors: BTreeMap<&str, (u16, usize)> = BTreeMap::new();
        for (slot, line) in slots.iter().zip(slot_lines(&availabilities)) {
            let (port, first_line) = *doctors.entry(&slot.doctor).or_insert((slot.port, line));
            if port != slot.port {
                return Err(availabilities.error(
                    line,
                    format!(
                        "doctor '{}' has port {} here but {} on line {}",
                        slot.doctor, slot.port, port, first_line
                    ),
                ));
            }
        }
        let mut loaded = Vec::with_capacity(doctors.len());
        for (name, (port, line)) in doctors {
            let file_name = format!("{name}.txt");
            let Some(file) = source.read(&file_name)? else {
                return Err(availabilities.error(
                    line,
                    format!(
                        "doctor '{name}' has no fee table ({} not found)",
                        source.label(&file_name)
                    ),
                ));
            };
            loaded.push(Doctor {
                name: name.to_owned(),
                port,
                fees: parse_fees(&file)?,
            });
        }
        let mut slots = slots;
        slots.sort_by_key(|s| s.index);
        Ok(Fixtures {
            users,
            slots,
            doctors: loaded,
        })
    }

    pub fn doctor(&self, name: &str) -> Option<&Doctor> {
        self.doctors.iter().find(|d| d.name == name)
    }
}

/// The line numbers of `availabilities.txt`'s records, in file order.
fn slot_lines(file: &File) -> Vec<usize> {
    file.records().map(|(line, _)| line).collect()
}

fn parse_users(file: &File) -> Result<Users, DataError> {
    let mut credentials = HashMap::new();
    for (line, fields) in file.records() {
        file.expect_fields(line, &fields, &["USERNAME", "PASSWORD"])?;
        if credentials
            .insert(fields[0].to_owned(), Credential::new(fields[1].to_owned()))
            .is_some()
        {
            return Err(file.error(line, format!("user '{}' appears twice", fields[0])));
        }
    }
    Ok(Users { credentials })
}

fn parse_slots(file: &File) -> Result<Vec<Slot>, DataError> {
    let mut seen = HashMap::new();
    let mut slots = Vec::new();
    for (line, fields) in file.records() {
        file.expect_fields(line, &fields, &["INDEX", "DAY", "TIME", "DOCTOR", "PORT"])?;
        let index = crate::protocol::parse_index(fields[0]).map_err(|_| {
            file.error(
                line,
                format!("index '{}' is not a positive whole number", fields[0]),
            )
        })?;
        if let Some(first) = seen.insert(index, line) {
            return Err(file.error(
                line,
                format!("index {index} appears twice (first on line {first})"),
            ));
        }
        let port = match fields[4].parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => {
                return Err(file.error(
                    line,
                    format!("port '{}' is not a number from 1 to 65535", fields[4]),
                ));
            }
        };
        slots.push(Slot {
            index,
            day: fields[1].to_owned(),
            time: fields[2].to_owned(),
            doctor: fields[3].to_owned(),
            port,
        });
    }
    Ok(slots)
}

fn parse_fees(file: &File) -> Result<FeeTable, DataError> {
    let mut costs = BTreeMap::new();
    for (line, fields) in file.records() {
        file.expect_fields(line, &fields, &["PLAN", "COST"])?;
        let cost = fields[1].parse::<u64>().map_err(|_| {
            file.error(
                line,
                format!("cost '{}' is not a whole number of dollars", fields[1]),
            )
        })?;
        if costs.insert(fields[0].to_owned(), cost).is_some() {
            return Err(file.error(line, format!("plan '{}' appears twice", fields[0])));
        }
    }
    Ok(FeeTable { costs })
}

/// A patient's credentials and insurance plan.
#[derive(Clone, PartialEq, Eq)]
pub struct Patient {
    pub username: String,
    pub password: String,
    pub plan: String,
}

impl fmt::Debug for Patient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Patient")
            .field("username", &self.username)
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl Patient {
    /// Reads `NAME.txt` (`USERNAME PASSWORD`) and `NAMEinsurance.txt`
    /// (`PLAN`), e.g. `patient1.txt` and `patient1insurance.txt`.
    ///
    /// # Errors
    ///
    /// A missing file, or one that is not exactly one record of the right
    /// shape.
    pub fn load(source: &Source, name: &str) -> Result<Patient, DataError> {
        let credentials = source.require(&format!("{name}.txt"))?;
        let [username, password] = single_record(&credentials, &["USERNAME", "PASSWORD"])?;
        let insurance = source.require(&format!("{name}insurance.txt"))?;
        let [plan] = single_record(&insurance, &["PLAN"])?;
        Ok(Patient {
            username,
            password,
            plan,
        })
    }
}

fn single_record<const N: usize>(file: &File, names: &[&str; N]) -> Result<[String; N], DataError> {
    let mut records = file.records();
    let Some((line, fields)) = records.next() else {
        return Err(DataError {
            file: file.label.clone(),
            line: None,
            reason: format!("expected one line: {}", names.join(" ")),
        });
    };
    file.expect_fields(line, &fields, names)?;
    if let Some((extra, _)) = records.next() {
        return Err(file.error(extra, "expected only one record"));
    }
    Ok(std::array::from_fn(|i| fields[i].to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> File {
        File {
            label: "test.txt".into(),
            text: text.into(),
        }
    }

    #[test]
    fn generated_slots_take_doctors_in_turn() {
        let doctors = [("doc1".to_owned(), 1000), ("doc2".to_owned(), 2000)];
        let slots: Vec<Slot> = generated_slots(9, &doctors).collect();
        assert_eq!(slots.len(), 9);
        assert_eq!(
            (slots[0].index, slots[0].doctor.as_str(), slots[0].port),
            (1, "doc1", 1000)
        );
        assert_eq!((slots[1].doctor.as_str(), slots[1].port), ("doc2", 2000));
        assert_eq!(
            (slots[7].day.as_str(), slots[7].time.as_str()),
            ("Mon", "10am")
        );
        assert_eq!(generated_slots(3, &[]).count(), 0);
    }

    #[test]
    fn built_in_fixtures_hold_the_protocol_defaults() {
        let fixtures = Fixtures::load(&Source::built_in()).unwrap();
        assert!(fixtures.users.check("patient1", "password111"));
        assert!(fixtures.users.check("patient2", "password222"));
        assert!(!fixtures.users.check("patient1", "password222"));
        assert!(!fixtures.users.check("nobody", "password111"));
        let indexes: Vec<u64> = fixtures.slots.iter().map(|s| s.index).collect();
        assert_eq!(indexes, [1, 2, 3, 4, 5, 6]);
        assert_eq!(
            fixtures.slots[0],
            Slot {
                index: 1,
                day: "Tue".into(),
                time: "01pm".into(),
                doctor: "doc1".into(),
                port: 41720
            }
        );
        let doc1 = fixtures.doctor("doc1").unwrap();
        assert_eq!(doc1.port, 41720);
        assert_eq!(doc1.fees.cost("insurance1"), Some(30));
        let doc2 = fixtures.doctor("doc2").unwrap();
        assert_eq!(doc2.port, 42720);
        assert_eq!(doc2.fees.cost("insurance2"), Some(60));
        assert_eq!(doc2.fees.cost("insurance9"), None);
    }

    #[test]
    fn built_in_patients_have_credentials_and_plans() {
        let p1 = Patient::load(&Source::built_in(), "patient1").unwrap();
        assert_eq!(
            (p1.username.as_str(), p1.password.as_str(), p1.plan.as_str()),
            ("patient1", "password111", "insurance1")
        );
        let p2 = Patient::load(&Source::built_in(), "patient2").unwrap();
        assert_eq!(p2.plan, "insurance2");
        let err = Patient::load(&Source::built_in(), "patient9").unwrap_err();
        assert_eq!(err.to_string(), "built-in patient9.txt: file not found");
    }

    #[test]
    fn records_skip_blank_lines_and_accept_tabs_and_crlf() {
        let f = file("a  b\r\n\r\n\tc\td \n");
        let records: Vec<_> = f.records().collect();
        assert_eq!(records, [(1, vec!["a", "b"]), (3, vec!["c", "d"])]);
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let err = parse_users(&file("patient1 password111\npatient2\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.txt line 2: expected 2 fields (USERNAME PASSWORD), found 1"
        );
        let err = parse_slots(&file("1 Tue 01pm doc1 41720\nx Mon 03pm doc2 42720\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.txt line 2: index 'x' is not a positive whole number"
        );
        let err = parse_slots(&file("1 Tue 01pm doc1 99999\n")).unwrap_err();
        assert_eq!(err.line, Some(1));
        let err = parse_fees(&file("insurance1 thirty\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.txt line 1: cost 'thirty' is not a whole number of dollars"
        );
    }

    #[test]
    fn duplicates_are_refused() {
        let err =
            parse_slots(&file("1 Tue 01pm doc1 41720\n\n1 Mon 03pm doc2 42720\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.txt line 3: index 1 appears twice (first on line 1)"
        );
        let err = parse_users(&file("a b\na c\n")).unwrap_err();
        assert_eq!(err.line, Some(2));
        let err = parse_fees(&file("p 1\np 2\n")).unwrap_err();
        assert_eq!(err.line, Some(2));
    }

    #[test]
    fn a_password_matches_only_exactly_whatever_its_length() {
        let users = Users::from_pairs([
            ("ann".to_owned(), "secret".to_owned()),
            ("bo".to_owned(), String::new()),
        ]);
        assert!(users.check("ann", "secret"));
        for wrong in ["secreT", "secre", "secrets", "", "s", "secret\0", "Secret"] {
            assert!(!users.check("ann", wrong), "{wrong:?}");
        }
        // An empty password is a password like any other.
        assert!(users.check("bo", ""));
        assert!(!users.check("bo", " "));
        // An unknown user fails whatever is given, an empty password too.
        for given in ["secret", "", "anything"] {
            assert!(!users.check("nobody", given), "{given:?}");
        }
        assert!(!users.check("", ""));
    }
}
