//! Tokens of a selector: the SQL-92 subset JMS defines.
//!
//! Keywords are case-insensitive; identifiers are case-sensitive (as in JMS). A name that is
//! not a Java-style identifier (`x-region`, `order.total`) is written in double quotes, the
//! SQL way. String literals use single quotes, with `''` for a quote inside.

use super::SelectorError;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Token {
    Ident(String),
    /// A double-quoted name: always a header.
    Quoted(String),
    Str(String),
    Int(i64),
    Float(f64),
    Keyword(Keyword),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Keyword {
    And,
    Or,
    Not,
    Between,
    In,
    Like,
    Escape,
    Is,
    Null,
    True,
    False,
}

const KEYWORDS: [(&str, Keyword); 11] = [
    ("AND", Keyword::And),
    ("OR", Keyword::Or),
    ("NOT", Keyword::Not),
    ("BETWEEN", Keyword::Between),
    ("IN", Keyword::In),
    ("LIKE", Keyword::Like),
    ("ESCAPE", Keyword::Escape),
    ("IS", Keyword::Is),
    ("NULL", Keyword::Null),
    ("TRUE", Keyword::True),
    ("FALSE", Keyword::False),
];

/// Longest first, so `<=` is not read as `<` then `=`.
const OPERATORS: [&str; 11] = ["<>", "<=", ">=", "!=", "=", "<", ">", "+", "-", "*", "/"];

/// A token and the character offset where it starts (for error messages).
pub(super) type Spanned = (Token, usize);

pub(super) fn tokenize(source: &str) -> Result<Vec<Spanned>, SelectorError> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        let c = chars[at];
        let start = at;
        if c.is_whitespace() {
            at += 1;
            continue;
        }
        let token = if c == '\'' {
            let (text, next) = quoted(&chars, at, '\'')?;
            at = next;
            Token::Str(text)
        } else if c == '"' {
            let (text, next) = quoted(&chars, at, '"')?;
            at = next;
            if text.is_empty() {
                return Err(SelectorError::at(start, "an empty quoted name"));
            }
            Token::Quoted(text)
        } else if c.is_ascii_digit() || (c == '.' && chars.get(at + 1).is_some_and(char::is_ascii_digit)) {
            let (token, next) = number(&chars, at)?;
            at = next;
            token
        } else if is_ident_start(c) {
            while at < chars.len() && is_ident_part(chars[at]) {
                at += 1;
            }
            let word: String = chars[start..at].iter().collect();
            match KEYWORDS.iter().find(|(name, _)| name.eq_ignore_ascii_case(&word)) {
                Some((_, keyword)) => Token::Keyword(*keyword),
                None => Token::Ident(word),
            }
        } else if c == '(' {
            at += 1;
            Token::LParen
        } else if c == ')' {
            at += 1;
            Token::RParen
        } else if c == ',' {
            at += 1;
            Token::Comma
        } else {
            let rest = &chars[at..];
            let op = OPERATORS
                .iter()
                .find(|op| rest.len() >= op.len() && op.chars().eq(rest[..op.len()].iter().copied()))
                .ok_or_else(|| SelectorError::at(start, format!("unexpected character '{c}'")))?;
            at += op.len();
            Token::Op(if *op == "!=" { "<>" } else { op })
        };
        tokens.push((token, start));
    }
    Ok(tokens)
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$'
}

fn is_ident_part(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// Text between `quote`s starting at `at`; a doubled quote stands for one.
fn quoted(chars: &[char], at: usize, quote: char) -> Result<(String, usize), SelectorError> {
    let mut text = String::new();
    let mut i = at + 1;
    loop {
        match chars.get(i) {
            None => return Err(SelectorError::at(at, "a quote that is never closed")),
            Some(&c) if c == quote => {
                if chars.get(i + 1) == Some(&quote) {
                    text.push(quote);
                    i += 2;
                } else {
                    return Ok((text, i + 1));
                }
            }
            Some(&c) => {
                text.push(c);
                i += 1;
            }
        }
    }
}

fn number(chars: &[char], at: usize) -> Result<(Token, usize), SelectorError> {
    let mut i = at;
    let mut is_float = false;
    while i < chars.len() && chars[i].is_ascii_digit() {
        i += 1;
    }
    if chars.get(i) == Some(&'.') {
        is_float = true;
        i += 1;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
    }
    if matches!(chars.get(i), Some('e' | 'E')) {
        let mut j = i + 1;
        if matches!(chars.get(j), Some('+' | '-')) {
            j += 1;
        }
        if chars.get(j).is_some_and(char::is_ascii_digit) {
            is_float = true;
            i = j;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    if chars.get(i).is_some_and(|&c| is_ident_part(c)) {
        return Err(SelectorError::at(at, "a number runs into a name"));
    }
    let text: String = chars[at..i].iter().collect();
    let token = if is_float {
        Token::Float(text.parse().map_err(|_| SelectorError::at(at, format!("bad number '{text}'")))?)
    } else {
        match text.parse::<i64>() {
            Ok(n) => Token::Int(n),
            // Too big for 64 bits: keep it as an approximate number, as SQL does.
            Err(_) => Token::Float(text.parse().map_err(|_| SelectorError::at(at, format!("bad number '{text}'")))?),
        }
    };
    Ok((token, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(source: &str) -> Vec<Token> {
        tokenize(source).unwrap().into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn operators_numbers_strings_and_names() {
        assert_eq!(
            kinds("a<>'it''s' AND \"x-y\">=1.5e2 or b!=-3"),
            vec![
                Token::Ident("a".into()),
                Token::Op("<>"),
                Token::Str("it's".into()),
                Token::Keyword(Keyword::And),
                Token::Quoted("x-y".into()),
                Token::Op(">="),
                Token::Float(150.0),
                Token::Keyword(Keyword::Or),
                Token::Ident("b".into()),
                Token::Op("<>"),
                Token::Op("-"),
                Token::Int(3),
            ]
        );
    }

    #[test]
    fn mistakes_name_their_place() {
        assert_eq!(tokenize("a = 'open").unwrap_err().offset, 4);
        assert_eq!(tokenize("a # 1").unwrap_err().offset, 2);
        assert!(tokenize("12abc").is_err());
        assert!(tokenize("\"\" = 1").is_err());
    }
}
