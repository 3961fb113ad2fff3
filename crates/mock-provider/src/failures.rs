//! Pieces of the injected failures that do more than pick a status: the
//! extra headers a throttling provider sends with its refusal
//! (`Retry-After`, `retry-after-ms`), so the gateway's handling of them can
//! be tested against a real HTTP answer.

use http::Response;
use http::header::{HeaderName, HeaderValue};

use crate::body::MockBody;

/// `response` with `headers` added; a pair that is not a valid header is
/// left out (a test that wants a hostile value still gets any string
/// HTTP can carry).
pub(crate) fn with_headers(
    mut response: Response<MockBody>,
    headers: &[(String, String)],
) -> Response<MockBody> {
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
