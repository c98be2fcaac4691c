//! The selector grammar, by recursive descent, into an [`Expr`] tree.
//!
//! Precedence, lowest first: `OR`, `AND`, `NOT`, the predicates (`=`, `<>`, `<`, `<=`, `>`,
//! `>=`, `[NOT] BETWEEN`, `[NOT] IN`, `[NOT] LIKE … [ESCAPE …]`, `IS [NOT] NULL`), `+ -`,
//! `* /`, unary `+ -`. `AND` and `OR` chains are kept flat (one node with many operands), so a
//! long list of alternatives does not make a deep tree.
//!
//! Limit: no node may sit deeper than [`DEPTH_MAX`]. The parser checks it while it builds the
//! tree, and evaluation recurses only along the tree, so no selector can overflow a stack.

use super::lex::{tokenize, Keyword, Spanned, Token};
use super::{Property, SelectorError, DEPTH_MAX};

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Literal {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Field {
    Property(Property),
    Header(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum LikePart {
    Char(char),
    /// `_`
    One,
    /// `%`
    Any,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Expr {
    Literal(Literal),
    Null,
    Field(Field),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Compare(CompareOp, Box<Expr>, Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Negate(Box<Expr>),
    Between { value: Box<Expr>, low: Box<Expr>, high: Box<Expr>, negated: bool },
    In { value: Box<Expr>, list: Vec<Literal>, negated: bool },
    Like { value: Box<Expr>, pattern: Vec<LikePart>, negated: bool },
    IsNull { value: Box<Expr>, negated: bool },
}

/// An expression with the depth of its tree.
type Node = (Expr, usize);

pub(super) fn parse(source: &str) -> Result<Expr, SelectorError> {
    let tokens = tokenize(source)?;
    if tokens.is_empty() {
        return Err(SelectorError::at(0, "the selector is empty"));
    }
    let mut parser = Parser { tokens, at: 0, end: source.chars().count(), nesting: 0 };
    let (expr, _) = parser.or()?;
    if let Some((token, offset)) = parser.tokens.get(parser.at) {
        return Err(SelectorError::at(*offset, format!("unexpected {} after a complete condition", describe(token))));
    }
    Ok(expr)
}

struct Parser {
    tokens: Vec<Spanned>,
    at: usize,
    /// Offset reported for "ended too soon".
    end: usize,
    /// How many parentheses, `NOT`s and signs the parser is inside.
    nesting: usize,
}

fn describe(token: &Token) -> String {
    match token {
        Token::Ident(name) => format!("name '{name}'"),
        Token::Quoted(name) => format!("name \"{name}\""),
        Token::Str(text) => format!("string '{text}'"),
        Token::Int(n) => format!("number {n}"),
        Token::Float(n) => format!("number {n}"),
        Token::Keyword(keyword) => format!("{keyword:?}").to_uppercase(),
        Token::Op(op) => format!("'{op}'"),
        Token::LParen => "'('".into(),
        Token::RParen => "')'".into(),
        Token::Comma => "','".into(),
    }
}

/// A node over children: one deeper than the deepest child, within the limit.
fn node(expr: Expr, children_depth: usize, offset: usize) -> Result<Node, SelectorError> {
    let depth = children_depth + 1;
    if depth > DEPTH_MAX {
        return Err(SelectorError::at(offset, format!("nested deeper than {DEPTH_MAX} levels")));
    }
    Ok((expr, depth))
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(token, _)| token)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end, |(_, offset)| *offset)
    }

    fn eat(&mut self, wanted: &Token) -> bool {
        if self.peek() == Some(wanted) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat_keyword(&mut self, keyword: Keyword) -> bool {
        self.eat(&Token::Keyword(keyword))
    }

    fn expect(&mut self, wanted: &Token, what: &str) -> Result<(), SelectorError> {
        if self.eat(wanted) {
            return Ok(());
        }
        Err(self.unexpected(what))
    }

    fn unexpected(&self, what: &str) -> SelectorError {
        match self.peek() {
            Some(token) => SelectorError::at(self.offset(), format!("expected {what}, found {}", describe(token))),
            None => SelectorError::at(self.end, format!("expected {what}, found the end")),
        }
    }

    fn or(&mut self) -> Result<Node, SelectorError> {
        self.chain(Keyword::Or, Self::and, Expr::Or)
    }

    fn and(&mut self) -> Result<Node, SelectorError> {
        self.chain(Keyword::And, Self::not, Expr::And)
    }

    /// `operand (KEYWORD operand)*`, flat.
    fn chain(
        &mut self,
        keyword: Keyword,
        operand: fn(&mut Self) -> Result<Node, SelectorError>,
        build: fn(Vec<Expr>) -> Expr,
    ) -> Result<Node, SelectorError> {
        let offset = self.offset();
        let (first, mut depth) = operand(self)?;
        if self.peek() != Some(&Token::Keyword(keyword)) {
            return Ok((first, depth));
        }
        let mut operands = vec![first];
        while self.eat_keyword(keyword) {
            let (next, next_depth) = operand(self)?;
            depth = depth.max(next_depth);
            operands.push(next);
        }
        node(build(operands), depth, offset)
    }

    fn not(&mut self) -> Result<Node, SelectorError> {
        let offset = self.offset();
        if self.eat_keyword(Keyword::Not) {
            let (inner, depth) = self.nested(Self::not, offset)?;
            return node(Expr::Not(Box::new(inner)), depth, offset);
        }
        self.predicate()
    }

    /// Parse something that nests the grammar (a parenthesis, `NOT`, a sign), refusing to
    /// recurse past the depth limit before the recursion happens.
    fn nested(
        &mut self,
        parse: fn(&mut Self) -> Result<Node, SelectorError>,
        offset: usize,
    ) -> Result<Node, SelectorError> {
        if self.nesting >= DEPTH_MAX {
            return Err(SelectorError::at(offset, format!("nested deeper than {DEPTH_MAX} levels")));
        }
        self.nesting += 1;
        let parsed = parse(self);
        self.nesting -= 1;
        parsed
    }

    fn predicate(&mut self) -> Result<Node, SelectorError> {
        let offset = self.offset();
        let (left, left_depth) = self.additive()?;
        let negated = self.eat_keyword(Keyword::Not);
        let value = Box::new(left);
        let expr_and_depth = match self.peek() {
            Some(Token::Keyword(Keyword::Between)) => {
                self.at += 1;
                let (low, low_depth) = self.additive()?;
                if !self.eat_keyword(Keyword::And) {
                    return Err(self.unexpected("AND in BETWEEN … AND …"));
                }
                let (high, high_depth) = self.additive()?;
                let depth = left_depth.max(low_depth).max(high_depth);
                (Expr::Between { value, low: Box::new(low), high: Box::new(high), negated }, depth)
            }
            Some(Token::Keyword(Keyword::In)) => {
                self.at += 1;
                (Expr::In { value, list: self.literal_list()?, negated }, left_depth)
            }
            Some(Token::Keyword(Keyword::Like)) => {
                self.at += 1;
                (Expr::Like { value, pattern: self.like_pattern()?, negated }, left_depth)
            }
            _ if negated => return Err(self.unexpected("BETWEEN, IN or LIKE after NOT")),
            Some(Token::Keyword(Keyword::Is)) => {
                self.at += 1;
                let negated = self.eat_keyword(Keyword::Not);
                if !self.eat_keyword(Keyword::Null) {
                    return Err(self.unexpected("NULL after IS"));
                }
                (Expr::IsNull { value, negated }, left_depth)
            }
            Some(Token::Op(op)) if compare_op(op).is_some() => {
                let op = compare_op(op).expect("checked");
                self.at += 1;
                let (right, right_depth) = self.additive()?;
                (Expr::Compare(op, value, Box::new(right)), left_depth.max(right_depth))
            }
            _ => return Ok((*value, left_depth)),
        };
        node(expr_and_depth.0, expr_and_depth.1, offset)
    }

    fn literal_list(&mut self) -> Result<Vec<Literal>, SelectorError> {
        self.expect(&Token::LParen, "'(' after IN")?;
        let mut list = Vec::new();
        loop {
            let literal = match self.peek() {
                Some(Token::Str(text)) => Literal::Str(text.clone()),
                Some(Token::Int(n)) => Literal::Int(*n),
                Some(Token::Float(n)) => Literal::Float(*n),
                _ => return Err(self.unexpected("a string or number in the IN list")),
            };
            self.at += 1;
            list.push(literal);
            if !self.eat(&Token::Comma) {
                break;
            }
        }
        self.expect(&Token::RParen, "')' or ',' in the IN list")?;
        Ok(list)
    }

    fn like_pattern(&mut self) -> Result<Vec<LikePart>, SelectorError> {
        let Some(Token::Str(pattern)) = self.peek().cloned() else {
            return Err(self.unexpected("a string pattern after LIKE"));
        };
        self.at += 1;
        let escape = if self.eat_keyword(Keyword::Escape) {
            let offset = self.offset();
            let Some(Token::Str(escape)) = self.peek().cloned() else {
                return Err(self.unexpected("a one-character string after ESCAPE"));
            };
            self.at += 1;
            let mut chars = escape.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Some(c),
                _ => return Err(SelectorError::at(offset, "ESCAPE takes exactly one character")),
            }
        } else {
            None
        };
        let mut parts = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            parts.push(match c {
                c if Some(c) == escape => match chars.next() {
                    Some(next) => LikePart::Char(next),
                    None => {
                        return Err(SelectorError::at(self.offset(), "a LIKE pattern ends with its escape character"))
                    }
                },
                '%' => LikePart::Any,
                '_' => LikePart::One,
                c => LikePart::Char(c),
            });
        }
        Ok(parts)
    }

    fn additive(&mut self) -> Result<Node, SelectorError> {
        self.arithmetic(&[("+", ArithOp::Add), ("-", ArithOp::Sub)], Self::multiplicative)
    }

    fn multiplicative(&mut self) -> Result<Node, SelectorError> {
        self.arithmetic(&[("*", ArithOp::Mul), ("/", ArithOp::Div)], Self::unary)
    }

    /// Left-associative `operand (op operand)*`.
    fn arithmetic(
        &mut self,
        ops: &[(&str, ArithOp)],
        operand: fn(&mut Self) -> Result<Node, SelectorError>,
    ) -> Result<Node, SelectorError> {
        let offset = self.offset();
        let (mut left, mut depth) = operand(self)?;
        while let Some(Token::Op(op)) = self.peek() {
            let Some((_, op)) = ops.iter().find(|(symbol, _)| symbol == op) else { break };
            self.at += 1;
            let (right, right_depth) = operand(self)?;
            (left, depth) = node(Expr::Arith(*op, Box::new(left), Box::new(right)), depth.max(right_depth), offset)?;
        }
        Ok((left, depth))
    }

    fn unary(&mut self) -> Result<Node, SelectorError> {
        let offset = self.offset();
        match self.peek() {
            Some(Token::Op("-")) => {
                self.at += 1;
                let (inner, depth) = self.nested(Self::unary, offset)?;
                match inner {
                    // A negative literal is a literal (so `-9223372036854775808` fits).
                    Expr::Literal(Literal::Int(n)) => Ok((Expr::Literal(Literal::Int(n.wrapping_neg())), depth)),
                    Expr::Literal(Literal::Float(n)) => Ok((Expr::Literal(Literal::Float(-n)), depth)),
                    inner => node(Expr::Negate(Box::new(inner)), depth, offset),
                }
            }
            Some(Token::Op("+")) => {
                self.at += 1;
                self.nested(Self::unary, offset)
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Node, SelectorError> {
        let offset = self.offset();
        let Some(token) = self.peek().cloned() else {
            return Err(self.unexpected("a value"));
        };
        let expr = match token {
            Token::LParen => {
                self.at += 1;
                let inner = self.nested(Self::or, offset)?;
                self.expect(&Token::RParen, "')'")?;
                return Ok(inner);
            }
            Token::Str(text) => Expr::Literal(Literal::Str(text)),
            Token::Int(n) => Expr::Literal(Literal::Int(n)),
            Token::Float(n) => Expr::Literal(Literal::Float(n)),
            Token::Keyword(Keyword::True) => Expr::Literal(Literal::Bool(true)),
            Token::Keyword(Keyword::False) => Expr::Literal(Literal::Bool(false)),
            Token::Keyword(Keyword::Null) => Expr::Null,
            Token::Ident(name) => Expr::Field(match Property::from_name(&name) {
                Some(property) => Field::Property(property),
                None => Field::Header(name),
            }),
            Token::Quoted(name) => Expr::Field(Field::Header(name)),
            _ => return Err(self.unexpected("a value")),
        };
        self.at += 1;
        Ok((expr, 1))
    }
}

fn compare_op(op: &str) -> Option<CompareOp> {
    Some(match op {
        "=" => CompareOp::Eq,
        "<>" => CompareOp::Ne,
        "<" => CompareOp::Lt,
        "<=" => CompareOp::Le,
        ">" => CompareOp::Gt,
        ">=" => CompareOp::Ge,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn or_and_chains_stay_flat() {
        let alternatives: Vec<String> = (0..1000).map(|n| format!("a = {n}")).collect();
        let Expr::Or(operands) = parse(&alternatives.join(" OR ")).unwrap() else { panic!("an OR node") };
        assert_eq!(operands.len(), 1000);
    }

    #[test]
    fn precedence_follows_sql() {
        let expected = Expr::Or(vec![
            Expr::Field(Field::Header("a".into())),
            Expr::And(vec![
                Expr::Not(Box::new(Expr::Field(Field::Header("b".into())))),
                Expr::Compare(
                    CompareOp::Gt,
                    Box::new(Expr::Arith(
                        ArithOp::Add,
                        Box::new(Expr::Literal(Literal::Int(1))),
                        Box::new(Expr::Arith(
                            ArithOp::Mul,
                            Box::new(Expr::Literal(Literal::Int(2))),
                            Box::new(Expr::Literal(Literal::Int(-3))),
                        )),
                    )),
                    Box::new(Expr::Field(Field::Property(Property::Priority))),
                ),
            ]),
        ]);
        assert_eq!(parse("a OR NOT b AND 1 + 2 * -3 > priority").unwrap(), expected);
    }

    #[test]
    fn deep_nesting_is_refused_before_it_can_overflow() {
        for source in [
            format!("{}a{}", "(".repeat(100_000), ")".repeat(100_000)),
            format!("{}a", "NOT ".repeat(100_000)),
            format!("{}1 = 1", "-".repeat(100_000)),
            format!("a = 1{}", " + 1".repeat(100_000)),
        ] {
            let error = parse(&source).unwrap_err();
            assert!(error.message.contains("nested deeper"), "{error}");
        }
        assert!(parse(&format!("{}a = 1{}", "(".repeat(DEPTH_MAX - 2), ")".repeat(DEPTH_MAX - 2))).is_ok());
    }

    #[test]
    fn mistakes_are_reported_with_their_place() {
        for (source, offset) in [
            ("", 0),
            ("a =", 3),
            ("a = 1 b", 6),
            ("a BETWEEN 1 OR 2", 12),
            ("a IN ()", 6),
            ("a IN (b)", 6),
            ("a LIKE b", 7),
            ("a LIKE 'x' ESCAPE 'ab'", 18),
            ("a IS 1", 5),
            ("a NOT = 1", 6),
            ("(a = 1", 6),
        ] {
            let error = parse(source).unwrap_err();
            assert_eq!(error.offset, offset, "{source}: {error}");
        }
    }
}
