//! The HTTP/2 body of an ADS response stream, written without tonic's
//! encoder: tonic copies every message into a buffer of its own stream, so
//! 2,000 proxies syncing at once would each hold a copy of the same
//! clusters and endpoints until their sockets took them. Here each gRPC
//! message goes out as its length prefix plus the [`EncodedResponse`]'s
//! parts, which are slices of the snapshot's shared buffers; HTTP/2 keeps
//! reference counts until it writes them.
//!
//! The body yields a frame only when hyper asks, and hyper asks only when
//! the stream has send capacity, so what a slow reader pins is bounded by
//! the HTTP/2 send buffer, not by what the server has to say.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Body, Frame};
use prost::Message;
use tonic::Status;

use super::ResponseStream;
use super::encoded::EncodedResponse;

/// gRPC's message prefix: a compression flag and a 4-byte length.
const PREFIX_BYTES: usize = 5;

pub struct ResponseBody {
    responses: ResponseStream<EncodedResponse>,
    /// Parts of the message being sent, after its first frame.
    pending: VecDeque<Bytes>,
    max_message_bytes: usize,
    /// The trailers went out; nothing follows.
    finished: bool,
}

impl ResponseBody {
    pub fn new(responses: ResponseStream<EncodedResponse>, max_message_bytes: usize) -> Self {
        ResponseBody {
            responses,
            pending: VecDeque::new(),
            max_message_bytes,
            finished: false,
        }
    }

    /// The first frame of a message: its prefix and header part together
    /// (both small), the entries queued behind as they are.
    fn start(&mut self, response: EncodedResponse) -> Result<Bytes, Status> {
        let len = response.encoded_len();
        if len > self.max_message_bytes {
            return Err(Status::out_of_range(format!(
                "response of {len} bytes exceeds the limit of {} bytes (--max-response-bytes)",
                self.max_message_bytes
            )));
        }
        let len = u32::try_from(len).map_err(|_| Status::out_of_range("response exceeds 4 GiB"))?;
        let mut parts = response.into_parts().into_iter();
        let header = parts.next().unwrap_or_default();
        let mut first = BytesMut::with_capacity(PREFIX_BYTES + header.len());
        first.put_u8(0);
        first.put_u32(len);
        first.put_slice(&header);
        self.pending.extend(parts);
        Ok(first.freeze())
    }

    fn finish(&mut self, status: &Status) -> Frame<Bytes> {
        self.finished = true;
        self.pending.clear();
        let mut trailers = http::HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            // Only a message that cannot be a header value fails; the code
            // alone still tells the proxy what happened.
            trailers.clear();
            let _ = Status::new(status.code(), "").add_header(&mut trailers);
        }
        Frame::trailers(trailers)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(part) = this.pending.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(part))));
        }
        let frame = match ready!(this.responses.as_mut().poll_next(cx)) {
            Some(Ok(response)) => match this.start(response) {
                Ok(first) => Frame::data(first),
                Err(status) => this.finish(&status),
            },
            Some(Err(status)) => this.finish(&status),
            None => this.finish(&Status::ok("")),
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ads::encoded::sotw_entry;
    use crate::resource::Resource;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use envoy_types::pb::google::protobuf::Any;
    use futures::stream;
    use http_body_util::BodyExt;

    fn response(nonce: &str, entries: Vec<Bytes>) -> EncodedResponse {
        EncodedResponse::sotw("v".into(), "t".into(), nonce.into(), entries)
    }

    async fn frames(
        items: Vec<Result<EncodedResponse, Status>>,
        max: usize,
    ) -> (Vec<Bytes>, http::HeaderMap) {
        let mut body = ResponseBody::new(Box::pin(stream::iter(items)), max);
        let (mut data, mut trailers) = (Vec::new(), http::HeaderMap::new());
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("frames never fail");
            match frame.into_data() {
                Ok(bytes) => data.push(bytes),
                Err(frame) => trailers = frame.into_trailers().expect("data or trailers"),
            }
        }
        (data, trailers)
    }

    /// Splits a gRPC body into its messages.
    fn messages(mut body: &[u8]) -> Vec<DiscoveryResponse> {
        let mut out = Vec::new();
        while !body.is_empty() {
            assert_eq!(body[0], 0, "uncompressed");
            let len = u32::from_be_bytes(body[1..5].try_into().expect("4 bytes")) as usize;
            out.push(DiscoveryResponse::decode(&body[5..5 + len]).expect("protobuf"));
            body = &body[5 + len..];
        }
        out
    }

    #[tokio::test]
    async fn messages_arrive_framed_and_entries_are_sent_by_reference() {
        let entry = sotw_entry(&Resource::from_any(Any {
            type_url: "t/a".into(),
            value: vec![7; 1000],
        }));
        let (data, trailers) = frames(
            vec![
                Ok(response("1", vec![entry.clone()])),
                Ok(response("2", vec![])),
            ],
            1 << 20,
        )
        .await;
        assert!(
            data.iter().any(|d| d.as_ptr() == entry.as_ptr()),
            "the shared entry itself is a frame"
        );
        let decoded = messages(&data.concat());
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0].nonce, "1");
        assert_eq!(decoded[0].resources.len(), 1);
        assert_eq!(decoded[1].nonce, "2");
        assert_eq!(trailers["grpc-status"], "0");
    }

    #[tokio::test]
    async fn an_error_or_an_oversized_message_ends_the_stream_with_its_status() {
        let (data, trailers) = frames(vec![Err(Status::unavailable("shutting down"))], 1024).await;
        assert!(data.is_empty());
        assert_eq!(
            trailers["grpc-status"],
            (tonic::Code::Unavailable as i32).to_string()
        );

        let big = sotw_entry(&Resource::from_any(Any {
            type_url: "t/a".into(),
            value: vec![0; 4096],
        }));
        let (data, trailers) = frames(vec![Ok(response("1", vec![big]))], 1024).await;
        assert!(data.is_empty());
        assert_eq!(
            trailers["grpc-status"],
            (tonic::Code::OutOfRange as i32).to_string()
        );
    }
}
