//! A CSV sheet as operators upload them (observations, loads): a header
//! row naming the columns in any order (case-insensitive), every required
//! column present and none unknown, then rows numbered as a spreadsheet
//! shows them (the header is row 1).

use csv::StringRecord;

use super::observations::{ImportReport, RowProblem};
use super::{Result, invalid};

pub struct Sheet<'a> {
    rd: csv::Reader<&'a [u8]>,
    header: StringRecord,
}

impl<'a> Sheet<'a> {
    /// Reads the header of `text`; returns the sheet and the index of each
    /// `required` column, in order. `help` lists the columns for the error.
    pub fn open(
        text: &'a str,
        known: &[&str],
        required: &[&str],
        help: &str,
    ) -> Result<(Sheet<'a>, Vec<usize>)> {
        let mut rd = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let header = rd
            .headers()
            .map_err(|e| invalid("csv", format!("row 1: {e}")))?
            .clone();
        let sheet = Sheet { rd, header };
        let idx: Option<Vec<usize>> = required.iter().map(|c| sheet.col(c)).collect();
        let Some(idx) = idx else {
            return Err(invalid(
                "csv",
                format!("row 1 must name the columns: {help}"),
            ));
        };
        if let Some(h) = sheet
            .header
            .iter()
            .find(|h| !known.iter().any(|k| h.eq_ignore_ascii_case(k)))
        {
            return Err(invalid(
                "csv",
                format!("row 1: unknown column {h:?} (columns: {help})"),
            ));
        }
        Ok((sheet, idx))
    }

    /// The index of an optional column.
    pub fn col(&self, name: &str) -> Option<usize> {
        self.header
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
    }

    /// The rows with their spreadsheet numbers (from 2), each counted in
    /// `report.rows`: at most `max` (more refuses the whole sheet: split
    /// it); a row the reader cannot read is a problem of that row in
    /// `report`, and left out.
    pub fn records(
        &mut self,
        max: usize,
        report: &mut ImportReport,
    ) -> Result<Vec<(usize, StringRecord)>> {
        let mut out = Vec::new();
        for (row, rec) in self.rows() {
            report.rows += 1;
            if report.rows > max {
                return Err(invalid(
                    "csv",
                    format!("more than {max} rows; split the file"),
                ));
            }
            match rec {
                Ok(r) => out.push((row, r)),
                Err(e) => report.problems.push(RowProblem {
                    row,
                    column: String::new(),
                    problem: e.to_string(),
                }),
            }
        }
        Ok(out)
    }

    /// The rows with their spreadsheet numbers (from 2).
    fn rows(
        &mut self,
    ) -> impl Iterator<Item = (usize, std::result::Result<StringRecord, csv::Error>)> + '_ {
        self.rd.records().enumerate().map(|(i, r)| (i + 2, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sheet_gives_numbered_rows_counted_up_to_its_limit_and_refuses_more() {
        let text = "tank,at\nt1,1\nt2,2\nt3,3\n";
        let open = || {
            Sheet::open(text, &["tank", "at"], &["tank", "at"], "tank,at")
                .unwrap()
                .0
        };
        let mut report = ImportReport::default();
        let rows = open().records(3, &mut report).unwrap();
        let got: Vec<(usize, String)> = rows.iter().map(|(n, r)| (*n, r[0].to_string())).collect();
        assert_eq!(
            got,
            vec![(2, "t1".into()), (3, "t2".into()), (4, "t3".into())]
        );
        assert_eq!(report.rows, 3);
        let over = open()
            .records(2, &mut ImportReport::default())
            .err()
            .unwrap();
        assert!(over.to_string().contains("more than 2 rows"), "{over}");
    }

    #[test]
    fn a_header_needs_every_required_column_and_no_unknown_one_in_any_order_and_case() {
        let (mut s, idx) = Sheet::open(
            "AT, tank ,note\nx,t1,hi\n",
            &["tank", "at", "note"],
            &["tank", "at"],
            "tank,at[,note]",
        )
        .unwrap();
        assert_eq!(idx, vec![1, 0]);
        assert_eq!(s.col("note"), Some(2));
        let rows: Vec<_> = s
            .rows()
            .map(|(n, r)| (n, r.unwrap()[1].to_string()))
            .collect();
        assert_eq!(rows, vec![(2, "t1".to_string())]);
        let missing = Sheet::open("tank\n", &["tank", "at"], &["tank", "at"], "tank,at")
            .err()
            .unwrap();
        assert!(
            missing
                .to_string()
                .contains("must name the columns: tank,at"),
            "{missing}"
        );
        let unknown = Sheet::open(
            "tank,at,colour\n",
            &["tank", "at"],
            &["tank", "at"],
            "tank,at",
        )
        .err()
        .unwrap();
        assert!(
            unknown.to_string().contains("unknown column \"colour\""),
            "{unknown}"
        );
    }
}
