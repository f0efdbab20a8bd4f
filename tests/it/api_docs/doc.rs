//! Reads docs/API.md into the steps the test executes.
//!
//! Only three kinds of block are executed; everything else is prose:
//!
//! * a fenced ```` ```http ```` block that starts with a method is a request,
//!   and the ```` ```http ```` block right after it (starting `HTTP/1.1`) is
//!   the response the document promises for it;
//! * a fenced ```` ```sse <stream> ```` block lists the next messages of an
//!   open event stream;
//! * an HTML comment `<!-- test: ... -->` (invisible when rendered) changes
//!   the environment: `server k=v ...` starts a fresh gateway with those
//!   settings, `shutdown` stops the current one gracefully.
//!
//! The info string of a response or `sse` block may name the stream (its
//! second word) and end with `end` (the server ends the stream after these
//! messages) or `close` (the reader hangs up).

/// Where a stream goes after the messages of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    StaysOpen,
    /// The server must end the stream next.
    Ends,
    /// The client closes it (the docs move on without it).
    Closed,
}

#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// For `text/event-stream`: the name later `sse` blocks use.
    pub stream: Option<String>,
    pub after: After,
}

#[derive(Debug)]
pub enum Step {
    Exchange { request: Request, response: Response },
    Events { stream: String, messages: Vec<String>, after: After },
    Server { settings: Vec<(String, String)> },
    Shutdown,
}

/// A step and the line of docs/API.md it starts on (for failure messages).
#[derive(Debug)]
pub struct Located {
    pub line: usize,
    pub step: Step,
}

/// A fenced block or a directive, before requests are paired with responses.
enum Block {
    Request(Request),
    Response(Response),
    Events { stream: String, messages: Vec<String>, after: After },
    Directive(String),
}

pub fn parse(markdown: &str) -> Vec<Located> {
    let mut blocks: Vec<(usize, Block)> = Vec::new();
    let mut lines = markdown.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((line, text)) = lines.next() {
        let trimmed = text.trim();
        if let Some(directive) = trimmed.strip_prefix("<!-- test:").and_then(|d| d.strip_suffix("-->")) {
            blocks.push((line, Block::Directive(directive.trim().to_owned())));
            continue;
        }
        let Some(info) = trimmed.strip_prefix("```") else { continue };
        let content: Vec<&str> = lines.by_ref().map(|(_, l)| l).take_while(|l| l.trim() != "```").collect();
        let words: Vec<&str> = info.split_whitespace().collect();
        let fail = |why: &str| -> ! { panic!("docs/API.md:{line}: {why}") };
        let block = match words.first().copied() {
            Some("http") if content.first().is_some_and(|l| l.starts_with("HTTP/")) => {
                let (stream, after) = stream_info(&words[1..]);
                Block::Response(response(&content, stream, after).unwrap_or_else(|e| fail(&e)))
            }
            Some("http") => Block::Request(request(&content).unwrap_or_else(|e| fail(&e))),
            Some("sse") => {
                let (stream, after) = stream_info(&words[1..]);
                let stream = stream.unwrap_or_else(|| fail("an sse block names its stream: ```sse <name>"));
                Block::Events { stream, messages: messages(&content), after }
            }
            _ => continue, // shell, JavaScript, JSON shapes: illustrations, not executed
        };
        blocks.push((line, block));
    }
    pair(blocks)
}

/// Every request needs the response the docs promise; a lone response is a
/// mistake in the docs.
fn pair(blocks: Vec<(usize, Block)>) -> Vec<Located> {
    let mut steps = Vec::new();
    let mut blocks = blocks.into_iter().peekable();
    while let Some((line, block)) = blocks.next() {
        let step = match block {
            Block::Request(request) => match blocks.next() {
                Some((_, Block::Response(response))) => Step::Exchange { request, response },
                _ => panic!("docs/API.md:{line}: a request must be followed by its ```http response block"),
            },
            Block::Response(_) => panic!("docs/API.md:{line}: a response block without a request before it"),
            Block::Events { stream, messages, after } => Step::Events { stream, messages, after },
            Block::Directive(d) if d == "shutdown" => Step::Shutdown,
            Block::Directive(d) => match d.strip_prefix("server") {
                Some(rest) => Step::Server {
                    settings: rest
                        .split_whitespace()
                        .map(|kv| match kv.split_once('=') {
                            Some((k, v)) => (k.to_owned(), v.to_owned()),
                            None => panic!("docs/API.md:{line}: server settings are key=value, not `{kv}`"),
                        })
                        .collect(),
                },
                None => panic!("docs/API.md:{line}: unknown directive `{d}` (server ... or shutdown)"),
            },
        };
        steps.push(Located { line, step });
    }
    steps
}

fn stream_info(words: &[&str]) -> (Option<String>, After) {
    let mut stream = None;
    let mut after = After::StaysOpen;
    for word in words {
        match *word {
            "end" => after = After::Ends,
            "close" => after = After::Closed,
            name => stream = Some(name.to_owned()),
        }
    }
    (stream, after)
}

/// Splits `Name: value` lines (up to the first blank line) from the body.
fn head_and_body(lines: &[&str]) -> Result<(Vec<(String, String)>, String), String> {
    let blank = lines.iter().position(|l| l.trim().is_empty()).unwrap_or(lines.len());
    let headers = lines[..blank]
        .iter()
        .map(|l| match l.split_once(':') {
            Some((name, value)) => Ok((name.trim().to_owned(), value.trim().to_owned())),
            None => Err(format!("`{l}` is not a `Name: value` header line")),
        })
        .collect::<Result<_, _>>()?;
    let body = lines.get(blank + 1..).unwrap_or_default().join("\n").trim().to_owned();
    Ok((headers, body))
}

fn request(lines: &[&str]) -> Result<Request, String> {
    let (first, rest) = lines.split_first().ok_or("an empty ```http block")?;
    let (method, target) = first.split_once(' ').ok_or("a request starts with `METHOD /path`")?;
    let (headers, body) = head_and_body(rest)?;
    Ok(Request { method: method.to_owned(), target: target.trim().to_owned(), headers, body })
}

fn response(lines: &[&str], stream: Option<String>, after: After) -> Result<Response, String> {
    let (first, rest) = lines.split_first().ok_or("an empty ```http block")?;
    let mut words = first.splitn(3, ' ').skip(1);
    let status =
        words.next().and_then(|s| s.parse().ok()).ok_or("a response starts with `HTTP/1.1 <status> <reason>`")?;
    let reason = words.next().unwrap_or_default().to_owned();
    let (headers, body) = head_and_body(rest)?;
    Ok(Response { status, reason, headers, body, stream, after })
}

/// SSE messages are separated by blank lines.
pub fn messages(lines: &[&str]) -> Vec<String> {
    lines.split(|l| l.trim().is_empty()).filter(|m| !m.is_empty()).map(|m| m.join("\n")).collect()
}
