"""FER2013's class labels in the original csv's order, onto which every source (csv, folders, synthetic) maps, so a
label means the same thing everywhere (folder names are never sorted alphabetically into codes)."""

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES: int = len(EMOTIONS)
IMAGE_SIZE: int = 48

# Training-split class counts of the real FER2013 (the csv's "Training" usage), used to mimic its imbalance.
FER2013_TRAIN_COUNTS: dict[str, int] = {
    "angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "sad": 4830, "surprise": 3171, "neutral": 4965,
}
