//! `s3://bucket/key` locations in a spec: parsed and checked here, so a
//! producer, `spoolctl` and the worker refuse the same malformed ones.

/// Longest object key S3 accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// An object (or, for an HLS output, a key prefix) in an S3-compatible bucket.
///
/// Keys are held to the shape of a relative path: no leading `/`, no empty,
/// `.` or `..` segment, no backslash or control character. S3 itself would
/// accept those, but media tools and CDNs map keys to paths, and a key that
/// means something else as a path is a trick, not a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Uri {
    /// The bucket.
    pub bucket: String,
    /// The key (or prefix), without a leading `/`.
    pub key: String,
}

impl S3Uri {
    /// Whether `s` is meant as an S3 location (`s3://`, any case).
    pub fn is_s3(s: &str) -> bool {
        s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("s3://"))
    }

    /// Parses `s3://bucket/key`; the error says what is wrong.
    pub fn parse(s: &str) -> Result<S3Uri, String> {
        if !Self::is_s3(s) {
            return Err("does not start with s3://".into());
        }
        let rest = &s[5..];
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| "names a bucket but no key: write s3://bucket/key".to_string())?;
        check_bucket(bucket)?;
        check_key(key)?;
        Ok(S3Uri {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    /// The key's last segment (the file or directory name).
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }

    /// The key without its last segment, with a trailing `/` (empty at the
    /// bucket's top).
    pub fn parent_prefix(&self) -> &str {
        match self.key.rfind('/') {
            Some(i) => &self.key[..=i],
            None => "",
        }
    }
}

impl std::fmt::Display for S3Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// S3's bucket naming rules: 3 to 63 lowercase letters, digits, `.` and `-`,
/// starting and ending with a letter or digit.
fn check_bucket(b: &str) -> Result<(), String> {
    let ok_len = (3..=63).contains(&b.len());
    let ok_chars = b
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
    let ok_ends = b.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.bytes().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok_len && ok_chars && ok_ends && !b.contains("..") {
        Ok(())
    } else {
        Err(format!(
            "has bucket name {b:?}: a bucket is 3 to 63 lowercase letters, digits, '.' and '-'"
        ))
    }
}

fn check_key(k: &str) -> Result<(), String> {
    if k.is_empty() {
        return Err("has an empty key: write s3://bucket/key".into());
    }
    if k.len() > MAX_KEY_BYTES {
        return Err(format!(
            "has a key of {} bytes; at most {MAX_KEY_BYTES}",
            k.len()
        ));
    }
    if k.chars().any(|c| c.is_control() || c == '\\') {
        return Err("has a key with a control character or a backslash".into());
    }
    for seg in k.split('/') {
        match seg {
            "" => {
                return Err(format!(
                    "has key {k:?} with an empty segment (a leading, doubled or trailing '/')"
                ));
            }
            "." | ".." => return Err(format!("has key {k:?} with a {seg:?} segment")),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_uris_parse() {
        let u = S3Uri::parse("s3://media-in/src/a b/clip.mov").expect("valid");
        assert_eq!(u.bucket, "media-in");
        assert_eq!(u.key, "src/a b/clip.mov");
        assert_eq!(u.file_name(), "clip.mov");
        assert_eq!(u.parent_prefix(), "src/a b/");
        assert_eq!(u.to_string(), "s3://media-in/src/a b/clip.mov");
        assert_eq!(
            S3Uri::parse("S3://b12/top").map(|u| u.parent_prefix().to_owned()),
            Ok(String::new())
        );
    }

    #[test]
    fn tricks_are_refused() {
        for bad in [
            "s3://",
            "s3://bucket",
            "s3://bucket/",
            "s3://Bucket/k",
            "s3://b/k",
            "s3://-bucket/k",
            "s3://bu..cket/k",
            "s3://bucket//etc/passwd",
            "s3://bucket/a/../../b",
            "s3://bucket/./a",
            "s3://bucket/a/",
            "s3://bucket/a\\b",
            "s3://bucket/a\nb",
            "http://bucket/a",
        ] {
            assert!(S3Uri::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("s3://bucket/{}", "k".repeat(MAX_KEY_BYTES + 1));
        assert!(S3Uri::parse(&long).is_err());
    }
}
