/** The lab's namespace controller: a terminating namespace's objects are deleted, then the namespace. */
import { ApiError } from '../status.js';
import { R } from '../registry.js';
import { RESOURCES } from '../resources.js';
import { metaOf } from '../store.js';
import type { ControllerContext } from './shared.js';

export class NamespaceController {
  readonly #ctx: ControllerContext;

  constructor(ctx: ControllerContext) {
    this.#ctx = ctx;
  }

  reconcile(name: string): void {
    const o = this.#ctx.reg.tryGet(R.namespaces, '', name);
    if (!o) return;
    const m = metaOf(o);
    if (!m.deletionTimestamp) {
      if (!this.#ctx.reg.tryGet(R.serviceaccounts, name, 'default')) {
        try {
          this.#ctx.reg.create(R.serviceaccounts, name, { metadata: { name: 'default' } });
        } catch (e) {
          if (!(e instanceof ApiError && e.code === 409)) throw e;
        }
      }
      return;
    }
    let left = 0;
    for (const info of RESOURCES) {
      if (!info.namespaced) continue;
      for (const obj of this.#ctx.reg.store.list(info, name)) {
        left++;
        if (!metaOf(obj).deletionTimestamp) {
          try {
            this.#ctx.reg.delete(info, name, metaOf(obj).name!, { propagationPolicy: 'Background' });
          } catch (e) {
            if (!(e instanceof ApiError && e.code === 404)) throw e;
          }
        }
      }
    }
    if (left === 0) this.#ctx.reg.remove(R.namespaces, '', name);
    else setTimeout(() => this.#ctx.queue.add(`ns:${name}`, () => this.reconcile(name)), 500).unref();
  }
}
