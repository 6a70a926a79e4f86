//! A small POSIX shell word splitter: enough to find simple commands in `sh -c` scripts,
//! systemd command lines and README blocks. It knows quotes, escapes, line
//! continuations, comments, `$(...)` (whose commands it also reports), redirections,
//! the command separators `; & | && || ( )` and newlines, leading `NAME=value`
//! assignments and `export NAME=value`. It does not expand anything.

use super::Env;

/// One simple command: its words, and the variables assigned before it in the
/// script (by `export` or a bare assignment) or on its own line.
#[derive(Debug, Clone)]
pub struct Simple {
    pub argv: Vec<String>,
    pub env: Env,
}

enum Token {
    Word(String),
    Separator,
}

/// Keywords that may precede a command without being it.
const PREFIXES: &[&str] = &[
    "exec", "then", "do", "done", "else", "elif", "fi", "if", "while", "until", "!", "{", "}",
    "time",
];

/// The simple commands of `script`, those inside `$(...)` last.
pub fn commands(script: &str) -> Vec<Simple> {
    run(script).0
}

/// The variables `script` leaves set (assignments and exports), e.g. of an
/// environment file or a Dockerfile `ENV K=V K2=V2`.
pub fn variables(script: &str) -> Env {
    run(script).1
}

fn run(script: &str) -> (Vec<Simple>, Env) {
    let mut nested = Vec::new();
    let tokens = tokenize(script, &mut nested);
    let mut out = Vec::new();
    let mut shell_env = Env::new();
    let mut current: Vec<String> = Vec::new();
    let flush = |words: &mut Vec<String>, shell_env: &mut Env, out: &mut Vec<Simple>| {
        let mut env = shell_env.clone();
        let mut rest = std::mem::take(words).into_iter().peekable();
        let mut exported = false;
        while let Some(word) = rest.peek() {
            if PREFIXES.contains(&word.as_str()) {
                rest.next();
            } else if word == "export" {
                exported = true;
                rest.next();
            } else if let Some((name, value)) = assignment(word) {
                env.insert(name.clone(), value.clone());
                rest.next();
            } else {
                break;
            }
        }
        let argv: Vec<String> = rest.collect();
        if argv.is_empty() || exported {
            // `NAME=value` alone or `export NAME=value`: the script's own variables.
            *shell_env = env;
        } else {
            out.push(Simple { argv, env });
        }
    };
    for token in tokens {
        match token {
            Token::Word(w) => current.push(w),
            Token::Separator => flush(&mut current, &mut shell_env, &mut out),
        }
    }
    flush(&mut current, &mut shell_env, &mut out);
    for inner in nested {
        out.extend(commands(&inner));
    }
    (out, shell_env)
}

fn assignment(word: &str) -> Option<(String, String)> {
    let (name, value) = word.split_once('=')?;
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then(|| (name.to_owned(), value.to_owned()))
}

fn tokenize(script: &str, nested: &mut Vec<String>) -> Vec<Token> {
    let chars: Vec<char> = script.chars().collect();
    let mut tokens = Vec::new();
    let mut word = String::new();
    // Whether the word has begun (so that `""` is an empty word, not none).
    let mut in_word = false;
    // Whether the next word is a redirection target, to be dropped.
    let mut drop_next = false;
    let mut i = 0;
    let end_word = |word: &mut String, in_word: &mut bool, drop: &mut bool, t: &mut Vec<Token>| {
        if *in_word {
            if *drop {
                *drop = false;
            } else {
                t.push(Token::Word(std::mem::take(word)));
            }
        }
        word.clear();
        *in_word = false;
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => end_word(&mut word, &mut in_word, &mut drop_next, &mut tokens),
            '\n' | ';' | '&' | '|' | '(' | ')' => {
                end_word(&mut word, &mut in_word, &mut drop_next, &mut tokens);
                tokens.push(Token::Separator);
            }
            '#' if !in_word => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '\\' => {
                if chars.get(i + 1) == Some(&'\n') {
                    i += 2;
                    continue;
                }
                if let Some(&next) = chars.get(i + 1) {
                    word.push(next);
                    in_word = true;
                }
                i += 2;
                continue;
            }
            '\'' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    word.push(chars[i]);
                    i += 1;
                }
            }
            '"' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\'
                        && matches!(chars.get(i + 1), Some('"' | '\\' | '$' | '`' | '\n'))
                    {
                        if chars[i + 1] != '\n' {
                            word.push(chars[i + 1]);
                        }
                        i += 2;
                        continue;
                    }
                    if chars[i] == '$' && chars.get(i + 1) == Some(&'(') {
                        i = substitution(&chars, i, &mut word, nested);
                        continue;
                    }
                    word.push(chars[i]);
                    i += 1;
                }
            }
            '$' if chars.get(i + 1) == Some(&'(') => {
                in_word = true;
                i = substitution(&chars, i, &mut word, nested);
                continue;
            }
            '>' | '<' => {
                // `2>`: the digits were the file descriptor, not a word.
                if in_word && word.chars().all(|d| d.is_ascii_digit()) {
                    word.clear();
                    in_word = false;
                }
                end_word(&mut word, &mut in_word, &mut drop_next, &mut tokens);
                while matches!(chars.get(i + 1), Some('>' | '<' | '&')) {
                    i += 1;
                }
                // `2>&1`: the target is glued on; otherwise it is the next word.
                drop_next = true;
            }
            _ => {
                word.push(c);
                in_word = true;
            }
        }
        i += 1;
    }
    end_word(&mut word, &mut in_word, &mut drop_next, &mut tokens);
    tokens
}

/// Copies `$(...)` starting at `start` into `word` literally and records its inside
/// as a nested script; returns the index after the closing parenthesis.
fn substitution(
    chars: &[char],
    start: usize,
    word: &mut String,
    nested: &mut Vec<String>,
) -> usize {
    let mut depth = 0;
    let mut i = start + 1;
    let mut inner = String::new();
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        if depth > 0 && !(depth == 1 && c == '(' && i == start + 1) {
            inner.push(c);
        }
        i += 1;
    }
    word.push('$');
    word.push('(');
    word.push_str(&inner);
    word.push(')');
    nested.push(inner);
    i + 1
}

#[test]
fn splits_like_a_shell() {
    let script = "set -e\nX=1 exec leasehold a --b \"c d\" 'e f' >/dev/null 2>&1 && echo ok; \
                  export K=v\nleasehold g \\\n  --h=\"$(cat \"/x y\")\" | tee z # comment\n\
                  until leasehold member list > /dev/null 2>&1; do sleep 1; done";
    let commands = commands(script);
    let argvs: Vec<Vec<&str>> = commands
        .iter()
        .map(|c| c.argv.iter().map(String::as_str).collect())
        .collect();
    assert_eq!(
        argvs,
        vec![
            vec!["set", "-e"],
            vec!["leasehold", "a", "--b", "c d", "e f"],
            vec!["echo", "ok"],
            vec!["leasehold", "g", "--h=$(cat \"/x y\")"],
            vec!["tee", "z"],
            vec!["leasehold", "member", "list"],
            vec!["sleep", "1"],
            vec!["cat", "/x y"],
        ]
    );
    assert_eq!(commands[1].env.get("X").map(String::as_str), Some("1"));
    assert_eq!(commands[3].env.get("K").map(String::as_str), Some("v"));
    assert!(!commands[0].env.contains_key("K"));
    let vars = variables("A=1 B='two words'\nexport C=\"3\"\n# D=4\n");
    assert_eq!(vars.len(), 3, "{vars:?}");
    assert_eq!(vars["B"], "two words");
}
