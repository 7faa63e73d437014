//! The DNS name's current answer and TTL, as a resolver gives it: one A and one AAAA query over
//! UDP (RFC 1035), so the TTL the cutover waits out can be shown. Report only: nothing decides
//! on it. The reply parser reads untrusted bytes: every read is bounds-checked, names are
//! skipped (never followed: a compression pointer ends a name), answers are capped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// What a reply may hold at most, and how many answers are read.
const MAX_REPLY: usize = 4096;
const MAX_ANSWERS: usize = 64;

/// One address in the answer, with its TTL in seconds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Record {
    pub address: IpAddr,
    pub ttl: u32,
}

/// The resolver to ask when none is given: the first `nameserver` of `/etc/resolv.conf`.
pub fn system_resolver() -> Option<SocketAddr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
}

/// Ask `resolver` for the A and AAAA records of `name`.
pub fn resolve(name: &str, resolver: SocketAddr, timeout: Duration) -> Result<Vec<Record>, String> {
    let bind: SocketAddr = if resolver.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    socket
        .connect(resolver)
        .map_err(|e| format!("cannot reach the resolver {resolver}: {e}"))?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (i, qtype) in [1u16, 28].into_iter().enumerate() {
        let id = query_id(i);
        let query = build_query(id, name, qtype)?;
        socket
            .send(&query)
            .map_err(|e| format!("cannot send to the resolver {resolver}: {e}"))?;
        let mut buf = vec![0u8; MAX_REPLY];
        // Replies to something else (a late answer) are skipped, a few times at most.
        let mut answered = false;
        for _ in 0..4 {
            let n = socket
                .recv(&mut buf)
                .map_err(|e| format!("no answer from the resolver {resolver}: {e}"))?;
            match parse_reply(&buf[..n], id) {
                Ok(Some(records)) => {
                    out.extend(records);
                    answered = true;
                    break;
                }
                Ok(None) => continue,
                Err(e) => return Err(format!("the resolver {resolver} answered: {e}")),
            }
        }
        if !answered {
            return Err(format!("no answer from the resolver {resolver}"));
        }
    }
    Ok(out)
}

fn query_id(i: usize) -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos as u16).wrapping_add(i as u16)
}

/// A recursive query for one name and type.
pub fn build_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let name = name.trim_end_matches('.');
    if name.is_empty() || name.len() > 253 {
        return Err(format!("`{name}` is not a DNS name"));
    }
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("`{name}` is not a DNS name"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    Ok(q)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

/// Where the name starting at `at` ends.
fn skip_name(b: &[u8], mut at: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *b.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => {
                b.get(at + 1)?;
                return Some(at + 2);
            }
            l if l & 0xC0 != 0 => return None,
            l => at += 1 + usize::from(l),
        }
    }
    None
}

/// The A and AAAA records of a reply to query `id`; `None` for a reply to another query.
pub fn parse_reply(b: &[u8], id: u16) -> Result<Option<Vec<Record>>, String> {
    let short = || "a truncated or malformed reply".to_string();
    if u16_at(b, 0).ok_or_else(short)? != id {
        return Ok(None);
    }
    let flags = u16_at(b, 2).ok_or_else(short)?;
    if flags & 0x8000 == 0 {
        return Ok(None);
    }
    match flags & 0x000F {
        0 => {}
        3 => return Ok(Some(Vec::new())),
        rcode => return Err(format!("error code {rcode}")),
    }
    let questions = u16_at(b, 4).ok_or_else(short)?;
    let answers = usize::from(u16_at(b, 6).ok_or_else(short)?).min(MAX_ANSWERS);
    let mut at = 12;
    for _ in 0..questions.min(4) {
        at = skip_name(b, at).ok_or_else(short)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..answers {
        at = skip_name(b, at).ok_or_else(short)?;
        let rtype = u16_at(b, at).ok_or_else(short)?;
        let ttl = u32_at(b, at + 4).ok_or_else(short)?;
        let len = usize::from(u16_at(b, at + 8).ok_or_else(short)?);
        let data = b.get(at + 10..at + 10 + len).ok_or_else(short)?;
        at += 10 + len;
        let address = match (rtype, data.len()) {
            (1, 4) => IpAddr::from(<[u8; 4]>::try_from(data).map_err(|_| short())?),
            (28, 16) => IpAddr::from(<[u8; 16]>::try_from(data).map_err(|_| short())?),
            _ => continue,
        };
        out.push(Record { address, ttl });
    }
    Ok(Some(out))
}

/// A reply with these records, as a resolver would send it (for stand-ins and tests).
pub fn build_reply(query: &[u8], records: &[Record]) -> Vec<u8> {
    let Some(qend) = skip_name(query, 12).map(|e| e + 4) else {
        return Vec::new();
    };
    let Some(question) = query.get(12..qend) else {
        return Vec::new();
    };
    let qtype = u16_at(query, qend - 4).unwrap_or(1);
    let matching: Vec<&Record> = records
        .iter()
        .filter(|r| matches!((qtype, r.address), (1, IpAddr::V4(_)) | (28, IpAddr::V6(_))))
        .collect();
    let mut r = Vec::new();
    r.extend_from_slice(&query[..2]);
    r.extend_from_slice(&[0x81, 0x80, 0, 1]);
    r.extend_from_slice(&(matching.len() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(question);
    for rec in matching {
        r.extend_from_slice(&[0xC0, 12]);
        let (t, data): (u16, Vec<u8>) = match rec.address {
            IpAddr::V4(a) => (1, a.octets().to_vec()),
            IpAddr::V6(a) => (28, a.octets().to_vec()),
        };
        r.extend_from_slice(&t.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&rec.ttl.to_be_bytes());
        r.extend_from_slice(&(data.len() as u16).to_be_bytes());
        r.extend_from_slice(&data);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_reply_gives_its_addresses_and_ttls() {
        let q = build_query(7, "mdm.example.com.", 1).unwrap();
        let rec = Record {
            address: "192.0.2.10".parse().unwrap(),
            ttl: 300,
        };
        let reply = build_reply(&q, std::slice::from_ref(&rec));
        assert_eq!(parse_reply(&reply, 7).unwrap(), Some(vec![rec]));
        assert_eq!(
            parse_reply(&reply, 8).unwrap(),
            None,
            "another query's reply"
        );
    }

    #[test]
    fn names_that_are_not_dns_names_are_refused() {
        assert!(build_query(1, "", 1).is_err());
        assert!(build_query(1, "a..b", 1).is_err());
        assert!(build_query(1, &"x".repeat(64), 1).is_err());
    }

    proptest! {
        #[test]
        fn any_reply_bytes_parse_or_fail_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), id in any::<u16>()) {
            let _ = parse_reply(&bytes, id);
        }

        #[test]
        fn a_mangled_reply_never_panics(cut in 0usize..80, flip in 0usize..80, bit in 0u8..8) {
            let q = build_query(9, "mdm.example.com", 1).unwrap();
            let mut r = build_reply(&q, &[Record { address: "192.0.2.1".parse().unwrap(), ttl: 60 }]);
            if flip < r.len() { r[flip] ^= 1 << bit; }
            r.truncate(cut.min(r.len()));
            let _ = parse_reply(&r, 9);
        }
    }
}
