"""Face detectors (``--face_detector haar|mtcnn``): detection rate and decode+detect cost per clip.

    python benchmarks/face_detectors.py data/demo 22,23,24 [SKIMAGE_DATA_DIR]

On the paired clips of the given actors: how often the first sampled frame has a
face, and the decode+detect time per clip (8 frames at 112, one thread). With
SKIMAGE_DATA_DIR (the ``skimage/data`` folder of an unpacked scikit-image wheel;
scikit-image is not imported), also real photos: astronaut, camera and
matplotlib's Grace Hopper in 18 variants each, counted correct when the box holds
the hand-checked face centre and is face-sized, and ``lfw_subset`` (100 faces,
100 non-faces). Prints lines; quoted in the main README ("Face detector").
"""
import sys, time
import numpy as np, torch, cv2
from PIL import Image
from emolab.data.ravdess import pair_corpus
from emolab.data.video import preprocess_clip
from emolab.data.faces import make_face_detector

torch.set_num_threads(1); cv2.setNumThreads(1)
root = sys.argv[1]
actors = {int(a) for a in sys.argv[2].split(",")}
pairs = [p for p in pair_corpus(root).pairs if int(p.actor) in actors]
print(f"{len(pairs)} paired clips of actors {sorted(actors)} in {root}")
missed, tiles = [], []
for name in ("haar", "mtcnn"):
    det = make_face_detector(name); assert det.available, det.reason
    preprocess_clip(pairs[0].video_path, 8, 112, face_crop=True, detector=det)  # warm-up (loads the model)
    found, t0 = 0, time.perf_counter()
    for p in pairs:
        clip = preprocess_clip(p.video_path, 8, 112, face_crop=True, detector=det)
        found += clip.face == "found"
        if name == "haar" and clip.face != "found":
            missed.append(p.video_path)
        if name == "mtcnn" and p.video_path in missed[:16]:
            tiles.append(clip.frames[0])
    dt = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in pairs[:40]:
        preprocess_clip(p.video_path, 8, 112, face_crop=False)
    dec = (time.perf_counter() - t0) / min(40, len(pairs))
    print(f"demo {name}: face found in {found}/{len(pairs)} clips ({found/len(pairs):.1%}), "
          f"decode+detect {dt/len(pairs)*1000:.0f} ms/clip (decode alone {dec*1000:.0f} ms/clip)")
if tiles:  # the MTCNN crops of (up to 16) clips the Haar cascade misses, to look at
    Image.fromarray(np.concatenate(tiles, 1)).save("mtcnn_on_haar_misses.png")
# real faces from scikit-image 0.26.0's wheel (data files read with Pillow/numpy; skimage not imported)
if len(sys.argv) < 4:
    sys.exit(0)
sk = sys.argv[3]
astro = np.array(Image.open(f"{sk}/astronaut.png").convert("RGB"))
camera = np.array(Image.open(f"{sk}/camera.png").convert("RGB"))
from matplotlib import cbook
hopper = np.array(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))
lfw = np.load(f"{sk}/lfw_subset.npy")  # 100 faces then 100 non-faces, 25x25 grey in [0, 1]
# hand-checked face boxes (x0, y0, x1, y1) in the 512 px originals (drawn and viewed)
GT = {"astronaut": (180, 62, 268, 173), "camera": (196, 117, 255, 195), "grace_hopper": (172, 110, 354, 338)}
def variants(img, gt):
    h, w = img.shape[:2]
    c = np.array([(gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2, 1.0]); side = max(gt[2] - gt[0], gt[3] - gt[1])
    out = []
    for s in (1.0, 0.5, 0.25):  # 512, 256, 128 px
        im = cv2.resize(img, (int(w*s), int(h*s)), interpolation=cv2.INTER_AREA)
        for ang in (-15, 0, 15):
            M = cv2.getRotationMatrix2D((im.shape[1]/2, im.shape[0]/2), ang, 1.0)
            r = cv2.warpAffine(im, M, (im.shape[1], im.shape[0]), borderMode=cv2.BORDER_REFLECT)
            cs = M @ (c * np.array([s, s, 1.0]))
            for g in (0.5, 1.0):
                out.append((np.clip(r.astype(np.float32) * g, 0, 255).astype(np.uint8), cs, side * s))
    return out
def correct(box, centre, side):  # the box holds the true face centre and has a face-like size
    if box is None:
        return False
    x, y, bw, bh = box
    return x <= centre[0] <= x + bw and y <= centre[1] <= y + bh and 0.5 <= max(bw, bh) / side <= 2.0
for name in ("haar", "mtcnn"):
    det = make_face_detector(name)
    res = {}
    for label, img in (("astronaut", astro), ("camera", camera), ("grace_hopper", hopper)):
        vs = variants(img, GT[label]); t0 = time.perf_counter()
        boxes = [det.detect(v) for v, _, _ in vs]
        dt = (time.perf_counter() - t0) / len(vs)
        res[label] = (sum(correct(b, c, sd) for b, (_, c, sd) in zip(boxes, vs)), sum(b is not None for b in boxes), len(vs), dt)
    lf = [cv2.resize((np.stack([x]*3, -1)*255).astype(np.uint8), (100, 100), interpolation=cv2.INTER_CUBIC) for x in lfw]
    hits = [det.detect(x) is not None for x in lf]
    print(f"real {name}: " + ", ".join(f"{k} correct {v[0]}/{v[2]} variants (any box {v[1]}/{v[2]}, {v[3]*1000:.0f} ms/image)" for k, v in res.items())
          + f"; lfw_subset upscaled to 100 px: faces {sum(hits[:100])}/100, non-faces flagged {sum(hits[100:])}/100")
