//! The line each field of a document starts on, as a tree of path segments: a field is stored
//! as (its parent, its own key or index), never as a copy of its whole path, so the table is
//! linear in the document however deep it nests.

use std::collections::HashMap;

/// A step in a field path: a mapping key or a sequence index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// A field of the table; [`FieldLines::ROOT`] is the document itself.
pub(crate) type FieldId = usize;

/// Fields and their lines.
#[derive(Clone, Debug, Default)]
pub(crate) struct FieldLines {
    children: HashMap<(FieldId, Segment), FieldId>,
    lines: Vec<usize>,
}

impl FieldLines {
    /// The document itself.
    pub(crate) const ROOT: FieldId = 0;

    /// A table holding only the document, starting on `line`.
    pub(crate) fn new(line: usize) -> FieldLines {
        FieldLines {
            children: HashMap::new(),
            lines: vec![line],
        }
    }

    /// The field `segment` of `parent`; it starts on `line` unless it was recorded before.
    pub(crate) fn child(&mut self, parent: FieldId, segment: Segment, line: usize) -> FieldId {
        let next = self.lines.len();
        let id = *self.children.entry((parent, segment)).or_insert(next);
        if id == next {
            self.lines.push(line);
        }
        id
    }

    /// The line of the field at `path`, or of its nearest ancestor in the table.
    pub(crate) fn line_of(&self, path: impl IntoIterator<Item = Segment>) -> usize {
        let mut at = Self::ROOT;
        for segment in path {
            match self.children.get(&(at, segment)) {
                Some(&id) => at = id,
                None => break,
            }
        }
        self.lines.get(at).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_resolve_to_their_line_or_their_nearest_ancestor() {
        let mut t = FieldLines::new(1);
        let spec = t.child(FieldLines::ROOT, Segment::Key("spec".into()), 2);
        let http = t.child(spec, Segment::Key("http".into()), 3);
        t.child(http, Segment::Index(0), 4);
        assert_eq!(t.child(spec, Segment::Key("http".into()), 9), http);
        let path = |p: &[Segment]| t.line_of(p.iter().cloned());
        assert_eq!(path(&[]), 1);
        assert_eq!(
            path(&[Segment::Key("spec".into()), Segment::Key("http".into())]),
            3
        );
        assert_eq!(
            path(&[
                Segment::Key("spec".into()),
                Segment::Key("http".into()),
                Segment::Index(0)
            ]),
            4
        );
        assert_eq!(
            path(&[Segment::Key("spec".into()), Segment::Key("tcp".into())]),
            2
        );
    }
}
