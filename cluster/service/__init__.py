"""The fine-tuning service's durable state and job plumbing, shared by the Serve app (`serve/`) and the job driver
(`jobs.finetune --service-job`). Everything lives under one storage URI (a folder, a shared mount, s3:// or gs://):

```
{storage}/
  records/files/<file-id>.json        one uploaded file: tenant, name, bytes, purpose
  records/jobs/<job-id>.json          one job as created: request, resolved hyperparameters, Ray submission id
  records/models/<ft-name>.json       one published model: its adapter URI, parent, tenant
  records/aliases/<tenant>.<name>.json   a stable name -> a published model, with the previous target
  blobs/<file-id>                     the uploaded bytes
  jobs/<job-id>/status.json           what the job is doing now (written by the driver; by the app on cancel)
  jobs/<job-id>/events/<event-id>.json   one event per file, never rewritten
  jobs/<job-id>/checkpoints/<step>.json  one checkpoint per file: its URI, step and losses
  jobs/<job-id>/spec.yaml             the resolved rayfit spec the Ray job runs
  jobs/<job-id>/pause                 present while a pause is asked for (the training callback polls it)
  runs/<job-id>/                      the run folder (cluster/run_folder.py)
```

Each record is one object written whole (cluster/service/store.py says why); see docs/service.md.
"""
