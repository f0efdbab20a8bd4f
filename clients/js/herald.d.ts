// Herald's browser client: the contract. The implementation is herald.js
// (an ES module, no build step, no dependencies); docs/CLIENT.md explains it.

/** A notification as the stream and the list carry it (docs/API.md). */
export interface Notification {
  id: string;
  created_at: string;
  read: boolean;
  clicked: boolean;
  type: string;
  title: string;
  body?: string;
  url?: string;
  icon?: string;
  priority: 'low' | 'normal' | 'high';
  category?: string;
  data?: unknown;
  collapse_key?: string;
  /** Set on a topic's notification (a broadcast: it has no read state). */
  topic?: string;
  [field: string]: unknown;
}

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'offline';

export interface StateChange {
  state: ConnectionState;
  /** Why, when not `open`: e.g. 'network', 'token', 'browser_offline', 'shutdown', 'slow_consumer', 'closed'. */
  reason?: string;
}

export interface HeraldOptions {
  /** Herald's origin, e.g. 'https://notify.example.com'. Default: the page's origin. */
  url?: string;
  /** Returns a valid user token. Called at start, before the token expires
   *  (`token_expiring`), when the stream ends with `bye: token_expired`, and
   *  once more when an API call answers 401. */
  getToken: () => Promise<string> | string;
  /** The user id, which keys the stored cursor and the cross-tab channel.
   *  Default: the token's `sub` claim. */
  user?: string;
  /** Topics to follow on the stream (also `setTopics`). */
  topics?: string[];
  /** Share one stream among the tabs of this origin (Web Locks + BroadcastChannel). Default true. */
  crossTab?: boolean;
  /** Where the cursor is kept. Default: localStorage. */
  storage?: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>;
}

export interface Page {
  items: Notification[];
  unread_count: number;
  /** Pass as `before` for the next (older) page; null at the end. */
  next: string | null;
}

export interface Events {
  /** Once per notification id in each tab (live or replayed after a cursor). */
  notification: (notification: Notification) => void;
  unread: (value: { count: number }) => void;
  read: (value: { ids: string[] } | { all: true; up_to: string }) => void;
  deleted: (value: { ids: string[] }) => void;
  /** History the client showed is no longer right: `page` is the first page, refetched. */
  reset: (value: { reason: string; scope: string; page: Page | null }) => void;
  state: (value: StateChange) => void;
  /** The service worker reported a click on a shown push (see push.subscribe). */
  notificationclick: (value: { id: string | null; url: string | null; topic: string | null; marked: boolean }) => void;
  /** Something failed that the client could not recover from by itself. */
  error: (error: Error) => void;
}

export class HeraldError extends Error {
  /** The HTTP status (0: the network failed). */
  status: number;
  /** Herald's error code, e.g. 'not_found', 'validation_failed'. */
  code: string;
}

export class Herald {
  constructor(options: HeraldOptions);

  readonly state: ConnectionState;
  /** The last unread count the stream reported (null before the first). */
  readonly unreadCount: number | null;
  /** Whether this tab holds the shared stream. */
  readonly isLeader: boolean;

  /** Subscribes; returns a function that unsubscribes. */
  on<E extends keyof Events>(event: E, listener: Events[E]): () => void;
  off<E extends keyof Events>(event: E, listener: Events[E]): void;

  /** GET /v1/notifications. */
  list(query?: { before?: string; limit?: number; unread?: boolean }): Promise<Page>;
  /** POST /v1/notifications/read. The change reaches every tab through the stream's `read`. */
  markRead(ids: string[] | 'all'): Promise<{ unread_count: number }>;
  /** POST /v1/notifications/{id}/clicked (also marks it read). */
  markClicked(id: string): Promise<void>;
  /** DELETE /v1/notifications/{id}. */
  delete(id: string): Promise<void>;

  readonly preferences: {
    get(): Promise<unknown>;
    put(preferences: unknown): Promise<unknown>;
  };

  /** Follow these topics instead (the stream reopens with its cursor). */
  setTopics(topics: string[]): void;

  readonly push: {
    /** Whether this browser can take Web Push (service worker + PushManager + Notification). */
    readonly supported: boolean;
    /** Asks permission if needed, subscribes `registration`'s PushManager with
     *  Herald's VAPID key, stores the subscription in Herald, and hands the
     *  worker the token (message `{type: 'herald:token', token, url}`) so a
     *  click can mark the notification clicked. */
    subscribe(registration: ServiceWorkerRegistration): Promise<PushSubscription>;
    /** Removes it from Herald and from the browser. */
    unsubscribe(registration: ServiceWorkerRegistration): Promise<void>;
    /** The current subscription of `registration`, if any. */
    subscription(registration: ServiceWorkerRegistration): Promise<PushSubscription | null>;
  };

  /** Stops the stream (handing it to another tab) and all timers. */
  close(): void;
}
