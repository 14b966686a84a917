import { MemoryTaskStore } from './memory.ts';
import { storeConformance } from './store.case.ts';

storeConformance('memory', (opts) => Promise.resolve(new MemoryTaskStore(opts)));
