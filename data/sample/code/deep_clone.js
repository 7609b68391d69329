/**
 * Deep clone and deep equality for plain JavaScript data.
 *
 * Handles nested objects and arrays, Date, RegExp, Map and Set, and
 * circular references (tracked with a WeakMap so the copy preserves the
 * same shape of shared references as the original).
 */
'use strict';

/**
 * Return a deep copy of `value`.
 * @param {*} value
 * @param {WeakMap} [seen] - internal map from originals to their copies
 */
function deepClone(value, seen = new WeakMap()) {
  // Primitives and functions are returned as-is.
  if (value === null || typeof value !== 'object') return value;
  if (seen.has(value)) return seen.get(value);

  let copy;
  if (value instanceof Date) return new Date(value.getTime());
  if (value instanceof RegExp) return new RegExp(value.source, value.flags);

  if (value instanceof Map) {
    copy = new Map();
    seen.set(value, copy);
    value.forEach((v, k) => copy.set(deepClone(k, seen), deepClone(v, seen)));
    return copy;
  }
  if (value instanceof Set) {
    copy = new Set();
    seen.set(value, copy);
    value.forEach((v) => copy.add(deepClone(v, seen)));
    return copy;
  }

  /* Arrays and plain objects: keep the prototype so class instances survive. */
  copy = Array.isArray(value) ? [] : Object.create(Object.getPrototypeOf(value));
  seen.set(value, copy);
  for (const key of Reflect.ownKeys(value)) {
    copy[key] = deepClone(value[key], seen);
  }
  return copy;
}

/** Structural equality check for the same kinds of data deepClone supports. */
function deepEqual(a, b) {
  if (Object.is(a, b)) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (a.constructor !== b.constructor) return false;
  if (a instanceof Date) return a.getTime() === b.getTime();
  if (a instanceof RegExp) return String(a) === String(b);
  if (a instanceof Map || a instanceof Set) {
    return a.size === b.size && deepEqual([...a], [...b]);
  }
  const keysA = Reflect.ownKeys(a);
  const keysB = Reflect.ownKeys(b);
  return keysA.length === keysB.length && keysA.every((k) => deepEqual(a[k], b[k]));
}

if (require.main === module) {
  const recipe = {
    name: 'brioche',
    created: new Date('2024-03-01'),
    ingredients: [{ item: 'flour', grams: 500 }, { item: 'eggs', grams: 300 }],
    tags: new Set(['enriched', 'french']),
  };
  recipe.self = recipe; // circular reference

  const copy = deepClone(recipe);
  copy.ingredients[0].grams = 450;
  console.log('original flour:', recipe.ingredients[0].grams); // 500
  console.log('copy is circular:', copy.self === copy);        // true
  console.log('dates equal:', deepEqual(copy.created, recipe.created));
  console.log('deepEqual after edit:', deepEqual({ a: [1, 2] }, { a: [1, 3] }));
}

module.exports = { deepClone, deepEqual };
