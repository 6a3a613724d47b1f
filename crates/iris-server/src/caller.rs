//! The caller of an admin API request: who, what the grants say, and what they may see.

use iris_policy::Decision;
use iris_store::UsageQuery;

use crate::identity::Resolved;

#[derive(Clone)]
pub struct Caller {
    pub who: Resolved,
    pub decision: Decision,
    /// The break-glass admin on the local socket: admin whatever the grants say.
    pub local_admin: bool,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.local_admin || self.decision.is_admin()
    }

    pub fn has_role(&self) -> bool {
        self.local_admin || self.decision.role.is_some()
    }

    pub fn label(&self) -> String {
        self.who.principal.label()
    }

    /// Restrict a usage query to the caller's own records unless they are an admin.
    pub fn scope(&self, q: &mut UsageQuery) {
        if self.is_admin() {
            return;
        }
        let p = &self.who.principal;
        if let Some(l) = &p.login {
            q.login = Some(l.clone());
        } else if !p.tags.is_empty() {
            q.login = None;
            q.tags = Some(p.tags.clone());
        } else {
            q.login = None;
            q.identity_source = Some(p.source.as_str().to_owned());
        }
    }

    /// Whether a key issued for (login, tags) belongs to the caller.
    pub fn owns(&self, login: Option<&str>, tags: &[String]) -> bool {
        let p = &self.who.principal;
        match (&p.login, login) {
            (Some(mine), Some(theirs)) => mine.eq_ignore_ascii_case(theirs),
            (None, None) => !p.tags.is_empty() && p.tags == tags,
            _ => false,
        }
    }
}
