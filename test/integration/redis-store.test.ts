import { storeConformance } from '../../common/store/store.case.ts';
import { redisStore } from '../support/services.ts';

storeConformance('redis', (opts) => redisStore(opts));
