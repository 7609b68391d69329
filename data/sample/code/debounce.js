/**
 * Debounce and throttle helpers for rate-limiting function calls.
 *
 * debounce: wait until calls stop arriving for `wait` ms, then run once.
 *   Typical use: search-as-you-type, window resize handlers.
 * throttle: run at most once every `interval` ms, no matter how often called.
 *   Typical use: scroll position tracking, mouse-move analytics.
 */
'use strict';

/**
 * Return a debounced version of `fn`.
 * @param {Function} fn - function to delay
 * @param {number} wait - quiet period in milliseconds
 * @param {{leading?: boolean}} [options] - fire on the leading edge instead
 */
function debounce(fn, wait, options = {}) {
  let timer = null;
  let lastArgs = null;

  function debounced(...args) {
    const callNow = options.leading && timer === null;
    lastArgs = args;
    clearTimeout(timer); // every new call restarts the countdown
    timer = setTimeout(() => {
      timer = null;
      if (!options.leading) fn.apply(this, lastArgs);
    }, wait);
    if (callNow) fn.apply(this, args);
  }

  /* Allow callers to abandon a pending invocation, e.g. on unmount. */
  debounced.cancel = () => {
    clearTimeout(timer);
    timer = null;
  };
  return debounced;
}

/**
 * Return a throttled version of `fn` that runs at most once per interval.
 * The trailing call is kept so the final state is never lost.
 */
function throttle(fn, interval) {
  let last = 0;
  let trailing = null;

  return function throttled(...args) {
    const now = Date.now();
    const remaining = interval - (now - last);
    if (remaining <= 0) {
      last = now;
      fn.apply(this, args);
    } else {
      clearTimeout(trailing);
      trailing = setTimeout(() => {
        last = Date.now();
        fn.apply(this, args);
      }, remaining);
    }
  };
}

// Small demo when run directly with Node.js.
if (require.main === module) {
  const log = debounce((q) => console.log(`search for "${q}"`), 100);
  ['n', 'ne', 'neu', 'neut', 'neutron'].forEach((q, i) => setTimeout(() => log(q), i * 30));

  let count = 0;
  const tick = throttle(() => { count += 1; }, 50);
  const spam = setInterval(tick, 5);
  setTimeout(() => {
    clearInterval(spam);
    console.log(`throttled handler ran ${count} times in ~300 ms`);
  }, 300);
}

module.exports = { debounce, throttle };
