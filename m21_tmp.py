import time, numpy as np, torch
torch.set_num_threads(2)
from echogen.diffusion.cascade import DEFAULT_WEIGHTS, Cascade
from echogen.data.inputs import prepare_frame
import glob
casc = Cascade.load(DEFAULT_WEIGHTS)
vids, frs = [], []
for p in sorted(glob.glob("assets/examples/*.png"))[:3]:
    fr,_ = prepare_frame(p, frame=0, size=112)
    for steps in ({"base":2,"spatial":1,"temporal":1},{"base":4,"spatial":2,"temporal":2}):
        t=time.time()
        out = casc.sample(fr, [20, 35, 50, 70], seed=1, steps=steps)[-1]
        print(p, steps, time.time()-t, flush=True)
        vids.append(out.video[:,0].numpy()); frs.append(fr)
np.savez("/tmp/m21_vids.npz", vids=np.stack(vids), frames=np.stack(frs), fps=out.fps)
