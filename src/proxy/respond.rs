//! Short plain-text responses lariat writes itself (404, 503 and the like).

use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// The content type of lariat's own text answers.
const TEXT: &str = "text/plain; charset=utf-8";

/// Whether the connection closes after lariat's own answer with this status: after an error,
/// except a 404 or 503 (the client did nothing wrong and may go on using the connection).
pub fn closes(status: u16) -> bool {
    status >= 400 && status != 404 && status != 503
}

/// A complete text response as bytes, as [`text`] writes it (for the fast lane, which writes to
/// the socket itself). `close`: the connection closes after it either way.
pub fn raw_text(status: u16, body: &str, content_type: &str, close: bool) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
        body.len()
    );
    if status == 503 {
        out.push_str("retry-after: 1\r\n");
    }
    if close || closes(status) {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// lariat's own answer for `status` (its text from [`body_for`]) as bytes, as [`text`] writes it.
pub fn raw_status(status: u16, close: bool) -> Vec<u8> {
    raw_text(status, body_for(status), TEXT, close)
}

/// A 308 to `location` as bytes, as [`redirect`] writes it.
pub fn raw_redirect(location: &str, close: bool) -> Vec<u8> {
    let close = if close { "connection: close\r\n" } else { "" };
    format!("HTTP/1.1 308 Permanent Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\n{close}\r\n").into_bytes()
}

/// Write a complete text response. A 503 carries `Retry-After`.
pub async fn text(session: &mut Session, status: u16, body: &'static str) -> pingora_core::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header("content-type", TEXT)?;
    resp.insert_header("content-length", body.len().to_string())?;
    if status == 503 {
        resp.insert_header("retry-after", "1")?;
    }
    if closes(status) {
        resp.insert_header("connection", "close")?;
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(bytes::Bytes::from_static(body.as_bytes())), true)
        .await?;
    Ok(())
}

/// A 200 (or other) plain-text answer with a body made at run time.
pub async fn text_owned(session: &mut Session, status: u16, body: String) -> pingora_core::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header("content-type", "text/plain")?;
    resp.insert_header("content-length", body.len().to_string())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(bytes::Bytes::from(body)), true).await?;
    Ok(())
}

/// Answer 308 to `location`.
pub async fn redirect(session: &mut Session, location: &str) -> pingora_core::Result<()> {
    let mut resp = ResponseHeader::build(308, Some(4))?;
    resp.insert_header("location", location)?;
    resp.insert_header("content-length", "0")?;
    session.write_response_header(Box::new(resp), true).await?;
    Ok(())
}

/// The body lariat sends with a status it generates.
pub fn body_for(status: u16) -> &'static str {
    match status {
        400 => "bad request\n",
        404 => "no route for this host and path\n",
        408 => "request timeout\n",
        413 => "request body too large\n",
        431 => "request header fields too large\n",
        502 => "bad gateway: the backend failed\n",
        503 => "service unavailable: no usable backend\n",
        504 => "gateway timeout: the backend did not answer in time\n",
        _ => "error\n",
    }
}
