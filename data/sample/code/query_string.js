/**
 * Parse and build URL query strings.
 *
 * parse("?q=dark+matter&tag=a&tag=b") -> { q: "dark matter", tag: ["a", "b"] }
 * stringify({ q: "dark matter", page: 2 }) -> "q=dark%20matter&page=2"
 *
 * Repeated keys become arrays, "+" decodes to a space, and keys without a
 * value ("?debug") parse to an empty string.
 */
'use strict';

/** Decode one component, treating "+" as a space as HTML forms do. */
function decode(text) {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '));
  } catch (err) {
    // Malformed percent-escapes such as "%E0%A4%A" are kept verbatim.
    return text;
  }
}

/**
 * Parse a query string (with or without the leading "?") into an object.
 * @param {string} query
 * @returns {Object<string, string|string[]>}
 */
function parse(query) {
  const result = Object.create(null); // no prototype: "__proto__" is a safe key
  const trimmed = query.replace(/^[?#]/, '');
  if (!trimmed) return result;

  for (const pair of trimmed.split('&')) {
    if (!pair) continue; // skip empty segments from "a=1&&b=2"
    const eq = pair.indexOf('=');
    const key = decode(eq === -1 ? pair : pair.slice(0, eq));
    const value = eq === -1 ? '' : decode(pair.slice(eq + 1));
    if (key in result) {
      result[key] = [].concat(result[key], value);
    } else {
      result[key] = value;
    }
  }
  return result;
}

/**
 * Serialize an object into a query string. Arrays repeat the key;
 * null and undefined values are skipped.
 */
function stringify(params) {
  const parts = [];
  for (const [key, raw] of Object.entries(params)) {
    const values = Array.isArray(raw) ? raw : [raw];
    for (const value of values) {
      if (value === undefined || value === null) continue;
      parts.push(`${encodeURIComponent(key)}=${encodeURIComponent(String(value))}`);
    }
  }
  return parts.join('&');
}

if (require.main === module) {
  const parsed = parse('?q=dark+matter&tag=galaxy&tag=rotation%20curve&debug&&page=2');
  console.log(parsed);
  console.log(stringify({ q: 'café & crème', tags: ['a', 'b'], skip: null, page: 3 }));
  console.log(parse(stringify({ round: 'trip ✓' })));
}

module.exports = { parse, stringify };
