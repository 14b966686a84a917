// The JSON API as the page uses it: every call carries `Authorization: Bearer <key>` once a key
// is known. The key is asked for the first time the API answers 401 (with AUTH=off it never
// does) and kept in sessionStorage, so it lasts as long as the tab and never reaches disk.

const KEY_STORAGE = 'atq.apiKey';

export class ApiError extends Error {
  constructor(status, body) {
    const e = body?.error ?? {};
    super(e.message ? `${status} ${e.code}: ${e.message}` : `HTTP ${status}`);
    this.status = status;
    this.code = e.code ?? null;
    this.apiMessage = e.message ?? null;
    this.body = body;
  }
}

export const getKey = () => sessionStorage.getItem(KEY_STORAGE);
export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  keyListeners.forEach((fn) => fn(key));
}
const keyListeners = new Set();
export const onKeyChange = (fn) => keyListeners.add(fn);

/** Set by the page: shows the key dialog and settles with the key typed (or null when dismissed). */
let askForKey = () => Promise.resolve(null);
export const setKeyPrompt = (fn) => {
  askForKey = fn;
};
let pendingPrompt = null;
/** The dialog was dismissed: polls do not ask again until the user does (`askAgain`). */
let dismissed = false;
export const askAgain = () => {
  dismissed = false;
};
export const keyDismissed = () => dismissed;

/** One prompt for every call that got a 401 meanwhile. */
function promptOnce(reason) {
  if (dismissed) return Promise.resolve(null);
  pendingPrompt ??= askForKey(reason)
    .then((key) => {
      dismissed = !key;
      return key;
    })
    .finally(() => {
      pendingPrompt = null;
    });
  return pendingPrompt;
}

function headers(extra = {}) {
  const key = getKey();
  return { Accept: 'application/json', ...(key ? { Authorization: `Bearer ${key}` } : {}), ...extra };
}

/**
 * `method path` with an optional JSON body; answers the parsed JSON. A 401 asks for a key and
 * tries again with it; any other error status throws an ApiError.
 */
export async function api(method, path, body, { signal } = {}) {
  for (let round = 0; ; round++) {
    const res = await fetch(path, {
      method,
      headers: headers(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal,
    });
    if (res.status === 401 && round < 5) {
      const err = await res.json().catch(() => null);
      if (getKey()) setKey(null); // a revoked or mistyped key
      const key = await promptOnce(err?.error?.message ?? 'An API key is required.');
      if (!key) throw new ApiError(401, err);
      continue;
    }
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!res.ok) throw new ApiError(res.status, json);
    return json;
  }
}

export const qs = (params) => {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
};

/**
 * Follows a server-sent event stream with fetch (EventSource cannot send an Authorization
 * header), parsing the SSE lines itself. Calls `onEvent({id, event, data})` for each event; on
 * a dropped connection it reconnects with `Last-Event-ID` after a short pause, so no event is
 * lost or repeated. Ends when the server closes the stream after a final event (`isFinal`), or
 * when `signal` aborts. Answers the last event id seen.
 */
export async function follow(path, { onEvent, onOpen, isFinal, signal, lastEventId = null }) {
  let last = lastEventId;
  let pause = 500;
  while (!signal?.aborted) {
    let ended = false;
    try {
      const res = await fetch(path, { headers: headers({ Accept: 'text/event-stream', ...(last ? { 'Last-Event-ID': last } : {}) }), signal });
      if (res.status === 401) {
        if (getKey()) setKey(null);
        const key = await promptOnce('An API key is required.');
        if (!key) throw new ApiError(401, null);
        continue;
      }
      if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
      onOpen?.();
      pause = 500;
      for await (const e of parseSse(res.body, signal)) {
        last = e.id ?? last;
        onEvent(e);
        if (isFinal?.(e)) ended = true;
      }
      if (ended) return last;
    } catch (err) {
      if (signal?.aborted) return last;
      if (err instanceof ApiError && err.status !== 503) throw err;
    }
    // Closed early (a restart, a proxy, Redis away): resume after the last event.
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(pause * 2, 5000);
  }
  return last;
}

/** The events of an SSE body: `{id, event, data}` with `data` parsed as JSON when it is. */
export async function* parseSse(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const onAbort = () => reader.cancel().catch(() => undefined);
  signal?.addEventListener('abort', onAbort, { once: true });
  let buf = '';
  let event = 'message';
  let data = [];
  let id = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
        if (line === '') {
          if (data.length > 0) {
            const raw = data.join('\n');
            let parsed = raw;
            try {
              parsed = JSON.parse(raw);
            } catch {
              // plain text data
            }
            yield { id, event, data: parsed };
          }
          event = 'message';
          data = [];
          continue;
        }
        if (line.startsWith(':')) continue; // a comment: keep-alive
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'event') event = value;
        else if (field === 'data') data.push(value);
        else if (field === 'id' && !value.includes('\0')) id = value;
      }
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    reader.releaseLock?.();
  }
}

let openApi;
/** The task types and an example input of each, from GET /openapi.json (fetched once). */
export async function taskTypes() {
  openApi ??= fetch('/openapi.json').then((r) => (r.ok ? r.json() : null));
  const doc = await openApi.catch(() => null);
  const schemas = doc?.components?.schemas ?? {};
  const mapping = schemas.GeneralSubmission?.discriminator?.mapping ?? {};
  const types = Object.entries(mapping).map(([name, ref]) => {
    const schema = schemas[String(ref).split('/').pop()] ?? {};
    return { name, example: schema.examples?.[0]?.input ?? {}, description: schema.description ?? '' };
  });
  return types.length > 0 ? types : [{ name: 'agent', example: { content: 'hello' }, description: '' }];
}
