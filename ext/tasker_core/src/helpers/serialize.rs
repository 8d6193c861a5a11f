//! Any `Serialize` value as Ruby objects, built directly: Hashes with String keys (struct
//! fields and map keys, interned), Arrays, Strings, Integers, Floats, true, false and nil,
//! the objects a trip through JSON would give, without building the JSON in between. The
//! client calls convert a task and its steps on every creation and wait, so this is on
//! their path. (serde_magnus gives struct fields as Symbols, interning each one per value,
//! and measured slower than going through JSON.)
//!
//! Every Ruby value made here sits in a local (a Hash or Array under construction, or a
//! pair buffer) until it is stored in its parent, so Ruby's conservative stack scan sees it
//! if an allocation starts a collection meanwhile.

use super::convert::{interned, PairBuffer};
use crate::error::NativeError;
use magnus::value::ReprValue;
use magnus::{IntoValue, RArray, Ruby, Value};
use serde::ser::{self, Impossible, Serialize};
use std::fmt;

/// `value` as Ruby, as the module documentation describes.
pub fn to_ruby<T: Serialize + ?Sized>(ruby: &Ruby, value: &T) -> Result<Value, magnus::Error> {
    value
        .serialize(Serializer { ruby })
        .map_err(|e| NativeError::conversion(format!("converting a result to Ruby: {e}")).into())
}

#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        Error(msg.to_string())
    }
}

impl From<magnus::Error> for Error {
    fn from(e: magnus::Error) -> Self {
        Error(e.to_string())
    }
}

#[derive(Clone, Copy)]
struct Serializer<'r> {
    ruby: &'r Ruby,
}

impl Serializer<'_> {
    /// `{variant => value}`, as JSON spells an enum variant with data.
    fn variant(self, variant: &'static str, value: Value) -> Result<Value, Error> {
        let hash = self.ruby.hash_new();
        hash.aset(interned(self.ruby, variant), value)?;
        Ok(hash.as_value())
    }
}

/// Integer methods for the types an i64 holds.
macro_rules! widened_to_i64 {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(
            fn $method(self, v: $ty) -> Result<Value, Error> {
                self.serialize_i64(v.into())
            }
        )*
    };
}

impl<'r> ser::Serializer for Serializer<'r> {
    type Ok = Value;
    type Error = Error;
    type SerializeSeq = Seq<'r>;
    type SerializeTuple = Seq<'r>;
    type SerializeTupleStruct = Seq<'r>;
    type SerializeTupleVariant = Seq<'r>;
    type SerializeMap = Map<'r>;
    type SerializeStruct = Map<'r>;
    type SerializeStructVariant = Map<'r>;

    fn serialize_bool(self, v: bool) -> Result<Value, Error> {
        Ok(v.into_value_with(self.ruby))
    }

    widened_to_i64!(
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
    );

    fn serialize_i64(self, v: i64) -> Result<Value, Error> {
        Ok(self.ruby.integer_from_i64(v).as_value())
    }

    fn serialize_u64(self, v: u64) -> Result<Value, Error> {
        Ok(self.ruby.integer_from_u64(v).as_value())
    }

    fn serialize_f32(self, v: f32) -> Result<Value, Error> {
        self.serialize_f64(v.into())
    }

    /// NaN and the infinities have no JSON form: nil, as through JSON.
    fn serialize_f64(self, v: f64) -> Result<Value, Error> {
        Ok(if v.is_finite() {
            self.ruby.float_from_f64(v).as_value()
        } else {
            self.ruby.qnil().as_value()
        })
    }

    fn serialize_char(self, v: char) -> Result<Value, Error> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, v: &str) -> Result<Value, Error> {
        Ok(self.ruby.str_new(v).as_value())
    }

    /// Formatted on the stack when it fits (timestamps and ids do): a task's steps carry
    /// dozens of timestamps, and the default would allocate a String for each.
    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<Value, Error> {
        let mut buf = StackText::default();
        if fmt::write(&mut buf, format_args!("{value}")).is_ok() {
            return self.serialize_str(buf.as_str());
        }
        self.serialize_str(&value.to_string())
    }

    /// An Array of byte values, as JSON writes bytes.
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, Error> {
        let array = self.ruby.ary_new_capa(v.len());
        for b in v {
            array.push(*b)?;
        }
        Ok(array.as_value())
    }

    fn serialize_none(self) -> Result<Value, Error> {
        Ok(self.ruby.qnil().as_value())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<Value, Error> {
        Ok(self.ruby.qnil().as_value())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, Error> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, Error> {
        Ok(interned(self.ruby, variant).as_value())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        let inner = value.serialize(self)?;
        self.variant(variant, inner)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Seq<'r>, Error> {
        Ok(Seq {
            ser: self,
            array: self.ruby.ary_new_capa(len.unwrap_or(0)),
            variant: None,
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<Seq<'r>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Seq<'r>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Seq<'r>, Error> {
        let mut seq = self.serialize_seq(Some(len))?;
        seq.variant = Some(variant);
        Ok(seq)
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Map<'r>, Error> {
        Ok(Map::new(self, None))
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Map<'r>, Error> {
        Ok(Map::new(self, None))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Map<'r>, Error> {
        Ok(Map::new(self, Some(variant)))
    }
}

/// Text up to [`StackText::CAPACITY`] bytes; writing more fails (the caller then allocates).
struct StackText {
    bytes: [u8; StackText::CAPACITY],
    len: usize,
}

impl StackText {
    const CAPACITY: usize = 64;

    fn as_str(&self) -> &str {
        // Only whole `&str`s are copied in, so the bytes are UTF-8.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl Default for StackText {
    fn default() -> Self {
        StackText {
            bytes: [0; StackText::CAPACITY],
            len: 0,
        }
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > Self::CAPACITY {
            return Err(fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

pub struct Seq<'r> {
    ser: Serializer<'r>,
    array: RArray,
    variant: Option<&'static str>,
}

impl Seq<'_> {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.array.push(value.serialize(self.ser)?)?;
        Ok(())
    }

    fn finish(self) -> Result<Value, Error> {
        match self.variant {
            Some(v) => self.ser.variant(v, self.array.as_value()),
            None => Ok(self.array.as_value()),
        }
    }
}

/// The four sequence kinds serde distinguishes are one Array here.
macro_rules! seq_impl {
    ($trait:ident, $method:ident) => {
        impl ser::$trait for Seq<'_> {
            type Ok = Value;
            type Error = Error;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                self.push(value)
            }

            fn end(self) -> Result<Value, Error> {
                self.finish()
            }
        }
    };
}

seq_impl!(SerializeSeq, serialize_element);
seq_impl!(SerializeTuple, serialize_element);
seq_impl!(SerializeTupleStruct, serialize_field);
seq_impl!(SerializeTupleVariant, serialize_field);

pub struct Map<'r> {
    ser: Serializer<'r>,
    pairs: PairBuffer,
    /// The key `serialize_key` gave, until `serialize_value` gives its value.
    key: Value,
    variant: Option<&'static str>,
}

impl<'r> Map<'r> {
    fn new(ser: Serializer<'r>, variant: Option<&'static str>) -> Self {
        Map {
            ser,
            pairs: PairBuffer::new(ser.ruby),
            key: ser.ruby.qnil().as_value(),
            variant,
        }
    }

    fn insert<T: Serialize + ?Sized>(&mut self, key: Value, value: &T) -> Result<(), Error> {
        let value = value.serialize(self.ser)?;
        self.pairs.push(key, value)?;
        Ok(())
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        self.insert(interned(self.ser.ruby, key).as_value(), value)
    }

    fn finish(self) -> Result<Value, Error> {
        let hash = self.pairs.finish()?.as_value();
        match self.variant {
            Some(v) => self.ser.variant(v, hash),
            None => Ok(hash),
        }
    }
}

impl ser::SerializeMap for Map<'_> {
    type Ok = Value;
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.key = key.serialize(KeySerializer {
            ruby: self.ser.ruby,
        })?;
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = std::mem::replace(&mut self.key, self.ser.ruby.qnil().as_value());
        self.insert(key, value)
    }

    fn end(self) -> Result<Value, Error> {
        self.finish()
    }
}

/// A struct and a struct variant's fields are one Hash's pairs.
macro_rules! struct_impl {
    ($trait:ident) => {
        impl ser::$trait for Map<'_> {
            type Ok = Value;
            type Error = Error;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), Error> {
                self.field(key, value)
            }

            fn end(self) -> Result<Value, Error> {
                self.finish()
            }
        }
    };
}

struct_impl!(SerializeStruct);
struct_impl!(SerializeStructVariant);

/// Map keys as JSON has them: Strings (interned); integers, booleans and characters by
/// their text. Anything else is refused, as JSON refuses it.
struct KeySerializer<'r> {
    ruby: &'r Ruby,
}

impl KeySerializer<'_> {
    fn text(self, v: impl fmt::Display) -> Result<Value, Error> {
        Ok(interned(self.ruby, &v.to_string()).as_value())
    }

    fn refuse(what: &str) -> Error {
        Error(format!(
            "a map key must be a string, integer or boolean, not {what}"
        ))
    }
}

/// Key methods that write the key's text.
macro_rules! key_as_text {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(
            fn $method(self, v: $ty) -> Result<Value, Error> {
                self.text(v)
            }
        )*
    };
}

impl ser::Serializer for KeySerializer<'_> {
    type Ok = Value;
    type Error = Error;
    type SerializeSeq = Impossible<Value, Error>;
    type SerializeTuple = Impossible<Value, Error>;
    type SerializeTupleStruct = Impossible<Value, Error>;
    type SerializeTupleVariant = Impossible<Value, Error>;
    type SerializeMap = Impossible<Value, Error>;
    type SerializeStruct = Impossible<Value, Error>;
    type SerializeStructVariant = Impossible<Value, Error>;

    key_as_text!(
        serialize_bool: bool,
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
        serialize_char: char,
    );

    fn serialize_f32(self, _v: f32) -> Result<Value, Error> {
        Err(Self::refuse("a float"))
    }

    fn serialize_f64(self, _v: f64) -> Result<Value, Error> {
        Err(Self::refuse("a float"))
    }

    fn serialize_str(self, v: &str) -> Result<Value, Error> {
        Ok(interned(self.ruby, v).as_value())
    }

    fn serialize_bytes(self, _v: &[u8]) -> Result<Value, Error> {
        Err(Self::refuse("bytes"))
    }

    fn serialize_none(self) -> Result<Value, Error> {
        Err(Self::refuse("none"))
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<Value, Error> {
        Err(Self::refuse("unit"))
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, Error> {
        Err(Self::refuse("a unit struct"))
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, Error> {
        Ok(interned(self.ruby, variant).as_value())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<Value, Error> {
        Err(Self::refuse("an enum variant with data"))
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(Self::refuse("a sequence"))
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
        Err(Self::refuse("a tuple"))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(Self::refuse("a tuple struct"))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(Self::refuse("an enum variant with data"))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(Self::refuse("a map"))
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        Err(Self::refuse("a struct"))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(Self::refuse("an enum variant with data"))
    }
}
