//! The gRPC codec of every generated client and server: tonic-prost's, except that Txn
//! messages (`TxnRequest`, `TxnResponse`) are decoded by [`crate::nested`], without
//! recursion and up to [`MAX_TXN_DEPTH`](crate::nested::MAX_TXN_DEPTH) levels deep in
//! place of prost's 50.
//!
//! A request nested deeper is answered as etcd answers a Txn past its ops budget:
//! InvalidArgument [`TOO_MANY_OPS`]. Bytes that are not the message get tonic-prost's
//! INTERNAL with prost's message.

use std::any::{Any, TypeId};
use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::ProstEncoder;

use crate::etcdserverpb::{TxnRequest, TxnResponse};
use crate::nested::{self, NestError, Nested};

/// etcd's message for a Txn past its limits (`rpctypes.ErrGRPCTooManyOps`).
pub const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";

/// tonic-prost's codec with [`NestedDecoder`] (named by `proto/build.rs`).
#[derive(Debug, Clone)]
pub struct NestedCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for NestedCodec<T, U> {
    fn default() -> Self {
        NestedCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for NestedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = NestedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        NestedDecoder { _pd: PhantomData }
    }
}

/// Decodes `U` with prost, or with [`nested::decode`] when `U` is a Txn message.
#[derive(Debug, Clone)]
pub struct NestedDecoder<U> {
    _pd: PhantomData<U>,
}

impl<U: Message + Default + 'static> Decoder for NestedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let id = TypeId::of::<U>();
        if id == TypeId::of::<TxnRequest>() {
            return decode_nested::<TxnRequest, U>(buf).map(Some);
        }
        if id == TypeId::of::<TxnResponse>() {
            return decode_nested::<TxnResponse, U>(buf).map(Some);
        }
        U::decode(buf).map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}

/// Decodes the `T` that `U` is (the caller compared their type ids).
fn decode_nested<T: Nested, U: 'static>(buf: &mut DecodeBuf<'_>) -> Result<U, Status> {
    let bytes = buf.copy_to_bytes(buf.remaining());
    let txn = nested::decode::<T>(&bytes).map_err(|e| match e {
        NestError::TooDeep if TypeId::of::<T>() == TypeId::of::<TxnRequest>() => Status::invalid_argument(TOO_MANY_OPS),
        e => Status::internal(e.to_string()),
    })?;
    let any: Box<dyn Any> = Box::new(txn);
    any.downcast::<U>()
        .map(|u| *u)
        .map_err(|_| Status::internal("codec: a Txn message decoded as another type"))
}
