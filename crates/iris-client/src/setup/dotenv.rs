//! `KEY=value` files (Gemini CLI's `~/.gemini/.env`): our keys' lines are replaced where they
//! are, missing ones are appended under a heading, every other line is kept byte for byte.

use super::Merged;

/// The variable a line assigns (`KEY=...` or `export KEY=...`), if any.
fn assigned(line: &str) -> Option<&str> {
    let l = line.trim_start();
    if l.starts_with('#') {
        return None;
    }
    let l = l.strip_prefix("export ").map_or(l, str::trim_start);
    let (name, _) = l.split_once('=')?;
    let name = name.trim();
    (!name.is_empty()).then_some(name)
}

pub(super) fn merge(existing: &str, vars: &[(String, String)], heading: &str) -> Merged {
    let mut notes = Vec::new();
    let mut done = vec![false; vars.len()];
    let mut out = String::with_capacity(existing.len() + 128);
    for line in existing.lines() {
        let Some(i) = assigned(line).and_then(|n| vars.iter().position(|(k, _)| k == n)) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let (k, v) = &vars[i];
        if done[i] {
            // A later duplicate would win in dotenv: drop it so ours is the one in force.
            notes.push(format!("removed a second {k}= line"));
            continue;
        }
        done[i] = true;
        let new = format!("{k}={v}");
        if line.trim() != new {
            notes.push(format!("replaced the {k}= line"));
        }
        out.push_str(&new);
        out.push('\n');
    }
    let missing: Vec<&(String, String)> = vars
        .iter()
        .zip(&done)
        .filter(|(_, d)| !**d)
        .map(|(kv, _)| kv)
        .collect();
    if !missing.is_empty() {
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(heading);
        out.push('\n');
        for (k, v) in missing {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    Merged { text: out, notes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_replaced_in_place() {
        let vars = vec![
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "2".to_owned()),
        ];
        let m = merge("# mine\nexport A=old\nOTHER=x\nA=dup\n", &vars, "# iris");
        assert_eq!(m.text, "# mine\nA=1\nOTHER=x\n\n# iris\nB=2\n");
        assert_eq!(m.notes.len(), 2);
        let fresh = merge("", &vars, "# iris");
        assert_eq!(fresh.text, "# iris\nA=1\nB=2\n");
        assert_eq!(merge(&fresh.text, &vars, "# iris").text, fresh.text);
        assert_eq!(assigned("  # A=1"), None);
        assert_eq!(assigned("export  KEY = v"), Some("KEY"));
    }
}
