import os

# Keep the converters' own progress output out of test logs.
os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tests never reach the Hugging Face hub: a hub id fails at once instead of after retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# No Android device answers in tests, even on a machine that has one attached: the adb
# runner's tests put their own fake adb in place.
os.environ["EDGEKILN_ADB"] = "/nonexistent/adb"
