//! The error a config load returns: every problem found, each with the line
//! it is on, so `tollgate config check` can list them all at once.

use std::fmt;

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file; `None` when the problem has no single place
    /// (the file cannot be read, or a required top-level key is absent).
    pub line: Option<usize>,
    pub message: String,
}

/// Every problem of one config file. `Display` prints one
/// `FILE:LINE: message` per problem, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file's path as the user gave it (or a label such as `<embedded>`).
    pub origin: String,
    pub problems: Vec<Problem>,
}

impl ConfigErrors {
    pub(crate) fn single(origin: &str, line: Option<usize>, message: String) -> Self {
        ConfigErrors {
            origin: origin.to_owned(),
            problems: vec![Problem { line, message }],
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match problem.line {
                Some(line) => write!(f, "{}:{line}: {}", self.origin, problem.message)?,
                None => write!(f, "{}: {}", self.origin, problem.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lists_every_problem_with_file_and_line() {
        let errors = ConfigErrors {
            origin: "tollgate.yaml".into(),
            problems: vec![
                Problem {
                    line: Some(3),
                    message: "first".into(),
                },
                Problem {
                    line: None,
                    message: "second".into(),
                },
            ],
        };
        assert_eq!(
            errors.to_string(),
            "tollgate.yaml:3: first\ntollgate.yaml: second"
        );
    }
}
