"""NVIDIA's sample client for its hosted Florence-2 API (build.nvidia.com, microsoft/florence-2), step for step, with
the image inline as base64 (the API's documented alternative to an uploaded asset) and the URL as an argument:
POST {"messages": [{"role": "user", "content": "<TASK><text><img src=\"data:image/jpeg;base64,...\" />"}]} with
Accept: application/json, write the answer to <out>.zip, extract the whole archive into <out>, list the folder.

usage: python3 nvidia_sample_client.py URL IMAGE PROMPT OUT [TOKEN]
"""
import base64
import json
import os
import sys
import zipfile

try:
    import requests
except ImportError:  # the same request through the standard library
    requests = None
    import urllib.request

nvai_url, image_path, prompt, out = sys.argv[1:5]
header_auth = f"Bearer {sys.argv[5] if len(sys.argv) > 5 else ''}"

with open(image_path, "rb") as f:
    image_b64 = base64.b64encode(f.read()).decode()
content = f'{prompt}<img src="data:image/jpeg;base64,{image_b64}" />'
inputs = {"messages": [{"role": "user", "content": content}]}
headers = {"Content-Type": "application/json", "Authorization": header_auth, "Accept": "application/json"}

if requests is not None:
    response = requests.post(nvai_url, headers=headers, json=inputs)
    status, body = response.status_code, response.content
else:
    req = urllib.request.Request(nvai_url, data=json.dumps(inputs).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req) as r:
        status, body = r.status, r.read()

with open(f"{out}.zip", "wb") as f:
    f.write(body)
with zipfile.ZipFile(f"{out}.zip", "r") as z:
    z.extractall(out)
print(json.dumps({"status": status, "files": sorted(os.listdir(out)), "client": "requests" if requests else "urllib"}))
