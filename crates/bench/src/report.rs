//! Result rows: an aligned human table, and with `--json` one JSON object per row on stdout
//! (the table then goes to stderr so stdout stays machine-readable).

use std::io::Write;

use serde_json::{Map, Value};

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A count.
    Int(u64),
    /// A measurement, printed with the given number of decimals.
    Float(f64, usize),
    /// A label.
    Text(String),
    /// Not measured.
    Missing,
}

impl Cell {
    /// A float, or `Missing` when absent.
    pub fn opt(value: Option<f64>, decimals: usize) -> Self {
        value.map_or(Self::Missing, |v| Self::Float(v, decimals))
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Int(v) => Some(*v as f64),
            Self::Float(v, _) => Some(*v),
            Self::Text(_) | Self::Missing => None,
        }
    }

    fn human(&self) -> String {
        match self {
            Self::Int(v) => v.to_string(),
            Self::Float(v, decimals) if v.is_finite() => format!("{v:.decimals$}"),
            Self::Float(..) | Self::Missing => "-".to_owned(),
            Self::Text(text) => text.clone(),
        }
    }

    fn json(&self) -> Value {
        match self {
            Self::Int(v) => Value::from(*v),
            Self::Float(v, decimals) => {
                let scale = 10f64.powi(i32::try_from(*decimals).unwrap_or(6));
                serde_json::Number::from_f64((v * scale).round() / scale)
                    .map_or(Value::Null, Value::Number)
            }
            Self::Text(text) => Value::from(text.as_str()),
            Self::Missing => Value::Null,
        }
    }
}

/// A row: named cells in column order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    cells: Vec<(&'static str, Cell)>,
}

impl Row {
    /// An empty row.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a cell.
    pub fn with(mut self, key: &'static str, cell: Cell) -> Self {
        self.cells.push((key, cell));
        self
    }

    /// Replaces the cell named `key` in place, or adds it.
    pub fn set(mut self, key: &'static str, cell: Cell) -> Self {
        match self.cells.iter_mut().find(|(k, _)| *k == key) {
            Some((_, slot)) => *slot = cell,
            None => self.cells.push((key, cell)),
        }
        self
    }

    /// The cell named `key`.
    pub fn get(&self, key: &str) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, cell)| cell)
    }

    /// `ours / baseline` for every key in `ratio_keys` (2 decimals); other columns are
    /// copied when both rows agree and left empty otherwise. `target` becomes `ratio`.
    pub fn ratio(ours: &Self, baseline: &Self, ratio_keys: &[&str]) -> Self {
        let mut row = Self::new();
        for (key, cell) in &ours.cells {
            let other = baseline.get(key);
            let value = if *key == "target" {
                Cell::Text("ratio".to_owned())
            } else if ratio_keys.contains(key) {
                match (cell.as_f64(), other.and_then(Cell::as_f64)) {
                    (Some(a), Some(b)) if b != 0.0 => Cell::Float(a / b, 2),
                    _ => Cell::Missing,
                }
            } else if other == Some(cell) {
                cell.clone()
            } else {
                Cell::Missing
            };
            row.cells.push((key, value));
        }
        row
    }
}

/// A column of the human table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// The row key it shows.
    pub key: &'static str,
    /// Its heading.
    pub header: &'static str,
}

/// Prints rows of one scenario as they are produced.
#[derive(Debug)]
pub struct Printer {
    scenario: &'static str,
    columns: Vec<Column>,
    json: bool,
    header_printed: bool,
}

impl Printer {
    /// A printer for `scenario` showing `columns`.
    pub fn new(scenario: &'static str, columns: &[Column], json: bool) -> Self {
        Self {
            scenario,
            columns: columns.to_vec(),
            json,
            header_printed: false,
        }
    }

    fn width(column: &Column) -> usize {
        column.header.len().max(9)
    }

    /// Prints one row (and the heading before the first).
    pub fn emit(&mut self, row: &Row) {
        let mut human = String::new();
        if !self.header_printed {
            self.header_printed = true;
            for column in &self.columns {
                human.push_str(&format!(
                    "{:>width$} ",
                    column.header,
                    width = Self::width(column)
                ));
            }
            human.push('\n');
        }
        for column in &self.columns {
            let text = row
                .get(column.key)
                .map_or_else(|| "-".to_owned(), Cell::human);
            human.push_str(&format!("{:>width$} ", text, width = Self::width(column)));
        }
        human.push('\n');
        // A closed stdout (a pipe to `head`) must not abort a run that holds a server.
        if self.json {
            let mut object = Map::new();
            object.insert("scenario".to_owned(), Value::from(self.scenario));
            for (key, cell) in &row.cells {
                object.insert((*key).to_owned(), cell.json());
            }
            let _ = writeln!(std::io::stdout(), "{}", Value::Object(object));
            let _ = std::io::stdout().flush();
            let _ = write!(std::io::stderr(), "{human}");
        } else {
            let _ = write!(std::io::stdout(), "{human}");
            let _ = std::io::stdout().flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_divides_only_the_measured_columns() {
        let ours = Row::new()
            .with("target", Cell::Text("server".into()))
            .with("members", Cell::Int(10))
            .with("delivered_per_s", Cell::Float(9000.0, 1))
            .with("p99_us", Cell::Float(50.0, 1))
            .with("cpu", Cell::Missing);
        let base = Row::new()
            .with("target", Cell::Text("baseline".into()))
            .with("members", Cell::Int(10))
            .with("delivered_per_s", Cell::Float(9000.0, 1))
            .with("p99_us", Cell::Float(0.0, 1))
            .with("cpu", Cell::Float(1.0, 1));
        let ratio = Row::ratio(&ours, &base, &["delivered_per_s", "p99_us", "cpu"]);
        assert_eq!(ratio.get("target"), Some(&Cell::Text("ratio".into())));
        assert_eq!(ratio.get("members"), Some(&Cell::Int(10)));
        assert_eq!(ratio.get("delivered_per_s"), Some(&Cell::Float(1.0, 2)));
        assert_eq!(
            ratio.get("p99_us"),
            Some(&Cell::Missing),
            "no division by zero"
        );
        assert_eq!(ratio.get("cpu"), Some(&Cell::Missing));
    }

    #[test]
    fn set_replaces_a_cell_in_place() {
        let row = Row::new()
            .with("target", Cell::Text("ratio".into()))
            .with("members", Cell::Int(10))
            .set("target", Cell::Text("v2/v1".into()))
            .set("acks", Cell::Int(3));
        assert_eq!(
            row,
            Row::new()
                .with("target", Cell::Text("v2/v1".into()))
                .with("members", Cell::Int(10))
                .with("acks", Cell::Int(3))
        );
    }

    #[test]
    fn json_has_nulls_for_missing_values() {
        assert_eq!(Cell::Missing.json(), Value::Null);
        assert_eq!(Cell::Float(f64::NAN, 1).json(), Value::Null);
        assert_eq!(Cell::Int(3).json(), Value::from(3));
    }
}
