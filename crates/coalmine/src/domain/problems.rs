//! What is wrong with a document, field by field, collected so all of it is said at once.

/// The problems found in a document so far, each "field: what is wrong".
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    pub fn add(&mut self, field: &str, why: impl Into<String>) {
        self.0.push(format!("{field}: {}", why.into()));
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

impl From<Vec<String>> for Problems {
    /// Problems already said, each "field: what is wrong".
    fn from(said: Vec<String>) -> Self {
        Problems(said)
    }
}
