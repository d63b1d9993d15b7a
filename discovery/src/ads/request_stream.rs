//! The request side of an ADS stream, decoded without tonic's `Streaming`:
//! that keeps a buffer as large as the largest request for the life of the
//! stream, and an EDS request naming every cluster is tens of kilobytes,
//! so 2,000 idle proxies would pin that much each. Here the buffer holds a
//! message only while it arrives and is released once decoded.

use std::marker::PhantomData;
use std::pin::Pin;

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use sync_wrapper::SyncWrapper;

use super::requests::DecodeRequest;
use tonic::{Code, Status};

/// gRPC's message prefix: a compression flag and a 4-byte length.
const PREFIX_BYTES: usize = 5;

type BoxBody = Pin<Box<dyn Body<Data = Bytes, Error = Status> + Send>>;

pub struct RequestStream<T> {
    /// Only ever used through `&mut`, which makes the stream `Sync` (it is
    /// borrowed across awaits) without the body having to be.
    body: SyncWrapper<BoxBody>,
    buf: BytesMut,
    max_message_bytes: usize,
    ended: bool,
    _message: PhantomData<fn() -> T>,
}

impl<T: DecodeRequest> RequestStream<T> {
    pub fn new<B>(body: B, max_message_bytes: usize) -> Self
    where
        B: Body + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        let body = body
            .map_frame(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
            .map_err(|e| Status::from_error(e.into()));
        RequestStream {
            body: SyncWrapper::new(Box::pin(body)),
            buf: BytesMut::new(),
            max_message_bytes,
            ended: false,
            _message: PhantomData,
        }
    }

    /// The next request; `None` once the proxy ends the stream (or resets
    /// it: a proxy going away is not an error).
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        loop {
            if let Some(message) = self.decode_buffered()? {
                return Ok(Some(message));
            }
            if self.ended {
                return Ok(None);
            }
            match self.body.get_mut().frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(status)) if status.code() == Code::Cancelled => self.ended = true,
                Some(Err(status)) => return Err(status),
                None if self.buf.is_empty() => self.ended = true,
                None => {
                    return Err(Status::internal(
                        "the request stream ended inside a message",
                    ));
                }
            }
        }
    }

    fn decode_buffered(&mut self) -> Result<Option<T>, Status> {
        if self.buf.len() < PREFIX_BYTES {
            return Ok(None);
        }
        match self.buf[0] {
            0 => {}
            1 => {
                return Err(Status::unimplemented(
                    "compressed xDS requests are not supported",
                ));
            }
            flag => {
                return Err(Status::internal(format!(
                    "invalid gRPC compression flag {flag}"
                )));
            }
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        // Refused from the prefix, before the body is buffered.
        if len > self.max_message_bytes {
            return Err(Status::out_of_range(format!(
                "request of {len} bytes exceeds the limit of {} bytes (--max-request-bytes)",
                self.max_message_bytes
            )));
        }
        if self.buf.len() < PREFIX_BYTES + len {
            return Ok(None);
        }
        let mut message = self.buf.split_to(PREFIX_BYTES + len);
        message.advance(PREFIX_BYTES);
        if self.buf.is_empty() {
            // Let the allocation go with the decoded message.
            self.buf = BytesMut::new();
        }
        T::decode_request(message.freeze()).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use prost::Message;

    fn framed(request: &DiscoveryRequest) -> Vec<u8> {
        let body = request.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn stream_of(chunks: Vec<Vec<u8>>, max: usize) -> RequestStream<DiscoveryRequest> {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, Status>(Frame::data(Bytes::from(c))));
        RequestStream::new(StreamBody::new(futures::stream::iter(frames)), max)
    }

    fn request(nonce: &str, names: usize) -> DiscoveryRequest {
        DiscoveryRequest {
            response_nonce: nonce.into(),
            resource_names: (0..names)
                .map(|i| format!("outbound|80||svc-{i}"))
                .collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn messages_split_across_frames_or_sharing_one_decode_in_order() {
        let (a, b, c) = (request("a", 2000), request("b", 0), request("c", 1));
        let a_bytes = framed(&a);
        let mut bc = framed(&b);
        bc.extend(framed(&c));
        let (first, second) = a_bytes.split_at(16 * 1024);
        let mut stream = stream_of(vec![first.to_vec(), second.to_vec(), bc], 1 << 20);
        for expected in [a, b, c] {
            assert_eq!(stream.message().await.expect("decodes"), Some(expected));
            if stream.buf.is_empty() {
                assert_eq!(stream.buf.capacity(), 0, "nothing is kept between messages");
            }
        }
        assert_eq!(stream.message().await.expect("ends"), None);
    }

    #[tokio::test]
    async fn an_oversized_request_is_refused_from_its_prefix() {
        let big = framed(&request("a", 100));
        let mut stream = stream_of(vec![big[..PREFIX_BYTES].to_vec()], 64);
        let refused = stream.message().await.expect_err("refused");
        assert_eq!(refused.code(), Code::OutOfRange);
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_message_is_an_error() {
        let half = framed(&request("a", 10));
        let mut stream = stream_of(vec![half[..half.len() / 2].to_vec()], 1 << 20);
        assert_eq!(
            stream.message().await.expect_err("cut").code(),
            Code::Internal
        );
    }
}
