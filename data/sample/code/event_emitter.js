/**
 * A tiny publish/subscribe event emitter.
 *
 * Listeners register for named events with on() or once(), and emit()
 * calls them synchronously in registration order. A wildcard "*" listener
 * receives every event, which is handy for logging.
 */
'use strict';

class EventEmitter {
  constructor() {
    /** @type {Map<string, Array<{fn: Function, once: boolean}>>} */
    this.listeners = new Map();
  }

  /** Subscribe `fn` to `event`; returns an unsubscribe function. */
  on(event, fn, once = false) {
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    if (!this.listeners.has(event)) this.listeners.set(event, []);
    this.listeners.get(event).push({ fn, once });
    return () => this.off(event, fn);
  }

  /** Subscribe for a single delivery only. */
  once(event, fn) {
    return this.on(event, fn, true);
  }

  /** Remove a listener; without `fn`, remove all listeners for the event. */
  off(event, fn) {
    if (!fn) {
      this.listeners.delete(event);
      return;
    }
    const list = (this.listeners.get(event) || []).filter((l) => l.fn !== fn);
    if (list.length) this.listeners.set(event, list);
    else this.listeners.delete(event);
  }

  /**
   * Call every listener for `event` with `args`.
   * Returns true if at least one listener (other than wildcards) ran.
   */
  emit(event, ...args) {
    const list = this.listeners.get(event) || [];
    // Copy first so listeners that unsubscribe during emit do not skip others.
    for (const listener of [...list]) {
      if (listener.once) this.off(event, listener.fn);
      listener.fn(...args);
    }
    for (const wildcard of this.listeners.get('*') || []) {
      wildcard.fn(event, ...args);
    }
    return list.length > 0;
  }

  /** Number of listeners currently registered for `event`. */
  listenerCount(event) {
    return (this.listeners.get(event) || []).length;
  }
}

if (require.main === module) {
  const oven = new EventEmitter();
  oven.on('*', (name, ...args) => console.log(`[log] ${name}`, ...args));
  oven.on('preheated', (temp) => console.log(`oven ready at ${temp} C`));
  oven.once('timer', () => console.log('timer rang (only once)'));

  oven.emit('preheated', 230);
  oven.emit('timer');
  oven.emit('timer'); // once-listener already removed
  console.log('timer listeners left:', oven.listenerCount('timer'));
}

module.exports = { EventEmitter };
